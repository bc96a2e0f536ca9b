# One image for every component: `lianluo serve <service>`, `lianluo migrate`, and the operator
# (`kopf run ...`, set as the command by the Helm chart).
# Build: docker build -t lianluo/lianluo:0.1.0 .
# The browser parts (the web chat widget, the console), bundled from the pinned npm packages
# of their lock files.
FROM node:20-slim AS widget
WORKDIR /web
COPY services/lianluo/services/gateway/web/package.json services/lianluo/services/gateway/web/package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY services/lianluo/services/gateway/web/src ./src
RUN npm run build

FROM node:20-slim AS console
WORKDIR /web
COPY services/lianluo/services/console/web/package.json services/lianluo/services/console/web/package-lock.json services/lianluo/services/console/web/build.mjs ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY services/lianluo/services/console/web/src ./src
RUN npm run build

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY operators ./operators
COPY protos ./protos
COPY --from=widget /web/dist ./services/lianluo/services/gateway/web/dist
COPY --from=console /web/dist ./services/lianluo/services/console/web/dist
# A virtual environment is copied whole into the runtime stage, leaving pip and sources behind.
RUN python -m venv /opt/lianluo \
 && /opt/lianluo/bin/pip install --upgrade pip==25.3 \
 && /opt/lianluo/bin/pip install .

FROM python:3.11-slim
# The chart mounts the root filesystem read-only, so no byte-code is written at run time.
ENV PATH=/opt/lianluo/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LIANLUO_GRPC_HOST=0.0.0.0
# espeak-ng says the voice service's prompts given as text.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends espeak-ng \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 lianluo \
 && useradd --system --uid 10001 --gid lianluo --no-create-home --home-dir /nonexistent lianluo
COPY --from=build /opt/lianluo /opt/lianluo
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["lianluo"]
CMD ["--help"]
