{{/* Names: "<fullname>-<component>", and "<fullname>-<cell>-<component>" in the first cell, so
that cells the operator clones beside it never collide with it. */}}
{{- define "lianluo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lianluo.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lianluo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Call with (dict "root" $ "name" $name "component" $c). */}}
{{- define "lianluo.componentName" -}}
{{- if eq .component.plane "cell" }}
{{- printf "%s-%s-%s" (include "lianluo.fullname" .root) .root.Values.firstCell.name .name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" (include "lianluo.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "lianluo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lianluo.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- if eq .component.plane "cell" }}
lianluo.io/cell: {{ .root.Values.firstCell.name }}
{{- end }}
{{- end }}

{{- define "lianluo.commonLabels" -}}
helm.sh/chart: {{ include "lianluo.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: lianluo
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lianluo.labels" -}}
{{ include "lianluo.selectorLabels" . }}
{{ include "lianluo.commonLabels" .root }}
{{- end }}

{{/* Labels for objects that belong to no single component. */}}
{{- define "lianluo.chartLabels" -}}
app.kubernetes.io/name: {{ include "lianluo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "lianluo.commonLabels" . }}
{{- end }}

{{- define "lianluo.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "lianluo.serviceAccountName" -}}
{{- printf "%s-%s" (include "lianluo.fullname" .) (ternary "operator" "workload" .operator) }}
{{- end }}

{{/* The components to render, in the map's (sorted) order: enabled, and for the first cell's
services only while the first cell is enabled. */}}
{{- define "lianluo.enabledComponents" -}}
{{- $out := list }}
{{- range $name, $c := .Values.components }}
{{- if and $c.enabled (or (ne $c.plane "cell") $.Values.firstCell.enabled) }}
{{- $out = append $out $name }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{- define "lianluo.kafkaBootstrap" -}}
{{- if .Values.strimzi.enabled }}
{{- printf "%s-kafka-bootstrap.%s.svc:9092" .Values.strimzi.name .Release.Namespace }}
{{- else }}
{{- required "kafka.bootstrapServers is required unless strimzi.enabled is true" .Values.kafka.bootstrapServers }}
{{- end }}
{{- end }}

{{/* The Kafka TLS files the components read, from Secrets, as JSON: each setting
(LIANLUO_KAFKA_SSL_*_FILE) with the file's path, its volume, its Secret and key. The operator
mounts the same Secrets at the same paths in every cell it clones. A file without SSL or SASL_SSL
would never be read, so the render stops. */}}
{{- define "lianluo.kafkaTlsFiles" -}}
{{- $k := .Values.kafka }}
{{- $files := dict }}
{{- if or $k.tls.caSecretName $k.tls.clientSecretName }}
{{- if not (and $k.auth.enabled (hasSuffix "SSL" $k.auth.securityProtocol)) }}
{{- fail "kafka.tls needs kafka.auth.enabled with securityProtocol SSL or SASL_SSL" }}
{{- end }}
{{- end }}
{{- with $k.tls.caSecretName }}
{{- $_ := set $files "LIANLUO_KAFKA_SSL_CA_FILE" (dict "path" "/etc/lianluo/kafka/ca/ca.crt" "volume" "kafka-ca" "secret" . "key" $k.tls.caKey) }}
{{- end }}
{{- with $k.tls.clientSecretName }}
{{- $_ := set $files "LIANLUO_KAFKA_SSL_CERT_FILE" (dict "path" "/etc/lianluo/kafka/client/tls.crt" "volume" "kafka-client" "secret" . "key" $k.tls.certKey) }}
{{- $_ := set $files "LIANLUO_KAFKA_SSL_KEY_FILE" (dict "path" "/etc/lianluo/kafka/client/tls.key" "volume" "kafka-client" "secret" . "key" $k.tls.keyKey) }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/* The volumes (.volumes true) or the read-only mounts of the Kafka TLS files. */}}
{{- define "lianluo.kafkaTlsVolumes" -}}
{{- $byVolume := dict }}
{{- range $name, $file := include "lianluo.kafkaTlsFiles" .root | fromJson }}
{{- $items := get (default (dict "secret" $file.secret "items" list) (get $byVolume $file.volume)) "items" }}
{{- $_ := set $byVolume $file.volume (dict "secret" $file.secret "items" (append $items (dict "key" $file.key "path" (base $file.path)))) }}
{{- end }}
{{- range $volume, $v := $byVolume }}
{{- if $.volumes }}
- name: {{ $volume }}
  secret:
    secretName: {{ $v.secret }}
    items:
      {{- range $v.items }}
      - key: {{ .key }}
        path: {{ .path }}
      {{- end }}
{{- else }}
- name: {{ $volume }}
  mountPath: /etc/lianluo/kafka/{{ trimPrefix "kafka-" $volume }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/* The environment of one component: the chart's connections and secret references first, then
the global env map, then the component's env map, each overriding the one before by key. */}}
{{- define "lianluo.env" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $env := dict }}
{{- $_ := set $env "OTEL_SERVICE_NAME" .name }}
{{- $metrics := default dict .component.metrics }}
{{- if $metrics.enabled }}
{{- $_ := set $env "LIANLUO_METRICS_PORT" ($metrics.port | toString) }}
{{- end }}
{{- if $v.telemetry.otlpEndpoint }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" $v.telemetry.otlpEndpoint }}
{{- end }}
{{- $_ := set $env "LIANLUO_ADMIN_KEY" (dict "secretKeyRef" (dict "name" $v.secrets.adminKey.name "key" $v.secrets.adminKey.key)) }}
{{- if $v.cloudnativePG.enabled }}
{{- $_ := set $env "LIANLUO_DATABASE_URL" (dict "secretKeyRef" (dict "name" (printf "%s-app" $v.cloudnativePG.name) "key" "uri")) }}
{{- else }}
{{- $_ := set $env "LIANLUO_DATABASE_URL" (dict "secretKeyRef" (dict "name" $v.secrets.database.name "key" $v.secrets.database.key)) }}
{{- end }}
{{- $_ := set $env "LIANLUO_KAFKA_BOOTSTRAP_SERVERS" (include "lianluo.kafkaBootstrap" $root) }}
{{- with $v.grpcTls }}{{- if .enabled }}
{{- /* Every component serves and dials gRPC over TLS (the operator dials the cells' tenants). */}}
{{- $_ := set $env "LIANLUO_GRPC_TLS_CERT_FILE" "/etc/lianluo/grpc/tls.crt" }}
{{- $_ := set $env "LIANLUO_GRPC_TLS_KEY_FILE" "/etc/lianluo/grpc/tls.key" }}
{{- $_ := set $env "LIANLUO_GRPC_TLS_CA_FILE" "/etc/lianluo/grpc/ca.crt" }}
{{- $_ := set $env "LIANLUO_GRPC_TLS_CLIENT_AUTH" (.clientAuth | toString) }}
{{- $_ := set $env "LIANLUO_GRPC_TLS_SERVER_NAME" .serverName }}
{{- end }}{{- end }}
{{- $_ := set $env "LIANLUO_KAFKA_FETCH_WAIT_MS" ($v.kafka.fetchWaitMs | toString) }}
{{- $tlsFiles := include "lianluo.kafkaTlsFiles" $root | fromJson }}
{{- /* The operator passes the same settings on to the cells, and uses them itself to read the
cells' consumer offsets when it moves a tenant between cells. */}}
{{- if $v.kafka.auth.enabled }}
{{- $protocol := $v.kafka.auth.securityProtocol }}
{{- $_ := set $env "LIANLUO_KAFKA_SECURITY_PROTOCOL" $protocol }}
{{- if hasPrefix "SASL_" $protocol }}
{{- $_ := set $env "LIANLUO_KAFKA_SASL_MECHANISM" $v.kafka.auth.saslMechanism }}
{{- $_ := set $env "LIANLUO_KAFKA_SASL_USERNAME" (dict "secretKeyRef" (dict "name" $v.kafka.auth.secretName "key" $v.kafka.auth.usernameKey)) }}
{{- $_ := set $env "LIANLUO_KAFKA_SASL_PASSWORD" (dict "secretKeyRef" (dict "name" $v.kafka.auth.secretName "key" $v.kafka.auth.passwordKey)) }}
{{- end }}
{{- range $name, $file := $tlsFiles }}
{{- $_ := set $env $name $file.path }}
{{- end }}
{{- end }}
{{- if eq .component.plane "cell" }}
{{- $_ := set $env "LIANLUO_CELL" $v.firstCell.name }}
{{- $_ := set $env "LIANLUO_TOPIC_PREFIX" (printf "%s." $v.firstCell.name) }}
{{- end }}
{{- if eq .component.plane "operator" }}
{{- /* The operator's own settings (LIANLUO_OPERATOR_*): what it needs to clone cells like the
first one and to provision tenants through the tenants API. */}}
{{- $_ := set $env "LIANLUO_NAMESPACE" (dict "fieldRef" (dict "fieldPath" "metadata.namespace")) }}
{{- $_ := set $env "LIANLUO_OPERATOR_IMAGE" (include "lianluo.image" $root) }}
{{- $_ := set $env "LIANLUO_OPERATOR_TENANTS_ADDRESS" (printf "%s-tenants:%v" (include "lianluo.fullname" $root) $v.components.tenants.service.port) }}
{{- $_ := set $env "LIANLUO_OPERATOR_ADMIN_KEY" (get $env "LIANLUO_ADMIN_KEY") }}
{{- $_ := set $env "LIANLUO_OPERATOR_ADMIN_KEY_SECRET" $v.secrets.adminKey.name }}
{{- $_ := set $env "LIANLUO_OPERATOR_KAFKA_BOOTSTRAP_SERVERS" (get $env "LIANLUO_KAFKA_BOOTSTRAP_SERVERS") }}
{{- $_ := set $env "LIANLUO_OPERATOR_KAFKA_FETCH_WAIT_MS" (get $env "LIANLUO_KAFKA_FETCH_WAIT_MS") }}
{{- if $v.kafka.auth.enabled }}
{{- $auth := $v.kafka.auth }}
{{- $_ := set $env "LIANLUO_OPERATOR_KAFKA_SECURITY_PROTOCOL" $auth.securityProtocol }}
{{- if hasPrefix "SASL_" $auth.securityProtocol }}
{{- /* Only the Secret's name and keys: each cell's pods read it, never the operator. */}}
{{- $_ := set $env "LIANLUO_OPERATOR_KAFKA_SASL_MECHANISM" $auth.saslMechanism }}
{{- $_ := set $env "LIANLUO_OPERATOR_KAFKA_SASL_SECRET" $auth.secretName }}
{{- $_ := set $env "LIANLUO_OPERATOR_KAFKA_SASL_USERNAME_KEY" $auth.usernameKey }}
{{- $_ := set $env "LIANLUO_OPERATOR_KAFKA_SASL_PASSWORD_KEY" $auth.passwordKey }}
{{- end }}
{{- if hasKey $tlsFiles "LIANLUO_KAFKA_SSL_CA_FILE" }}
{{- $_ := set $env "LIANLUO_OPERATOR_KAFKA_SSL_CA_SECRET" $v.kafka.tls.caSecretName }}
{{- $_ := set $env "LIANLUO_OPERATOR_KAFKA_SSL_CA_KEY" $v.kafka.tls.caKey }}
{{- end }}
{{- if hasKey $tlsFiles "LIANLUO_KAFKA_SSL_CERT_FILE" }}
{{- $_ := set $env "LIANLUO_OPERATOR_KAFKA_SSL_CLIENT_SECRET" $v.kafka.tls.clientSecretName }}
{{- $_ := set $env "LIANLUO_OPERATOR_KAFKA_SSL_CERT_KEY" $v.kafka.tls.certKey }}
{{- $_ := set $env "LIANLUO_OPERATOR_KAFKA_SSL_KEY_KEY" $v.kafka.tls.keyKey }}
{{- end }}
{{- end }}
{{- $_ := set $env "LIANLUO_OPERATOR_CELL_MAX_SESSIONS" ($v.cells.maxSessions | toString) }}
{{- $_ := set $env "LIANLUO_OPERATOR_CELL_MAX_TENANTS" ($v.cells.maxTenants | toString) }}
{{- $_ := set $env "LIANLUO_OPERATOR_CELL_REPLICAS" ($v.cells.replicas | toString) }}
{{- $_ := set $env "LIANLUO_OPERATOR_SEATS_PER_REPLICA" ($v.cells.seatsPerReplica | toString) }}
{{- $_ := set $env "LIANLUO_OPERATOR_CELL_NETWORK_POLICIES" ($v.networkPolicies | toString) }}
{{- if $v.grpcTls.enabled }}
{{- $_ := set $env "LIANLUO_OPERATOR_GRPC_TLS_SECRET" $v.grpcTls.secretName }}
{{- end }}
{{- if $v.cells.autoscaling.enabled }}
{{- $_ := set $env "LIANLUO_OPERATOR_CELL_AUTOSCALING" "true" }}
{{- $_ := set $env "LIANLUO_OPERATOR_CELL_AUTOSCALING_FACTOR" ($v.cells.autoscaling.factor | toString) }}
{{- $_ := set $env "LIANLUO_OPERATOR_CELL_AUTOSCALING_CPU_PERCENT" ($v.cells.autoscaling.cpuPercent | toString) }}
{{- if $v.cells.autoscaling.onLoad.enabled }}
{{- $_ := set $env "LIANLUO_OPERATOR_CELL_AUTOSCALING_ON_LOAD" "true" }}
{{- $_ := set $env "LIANLUO_OPERATOR_CELL_AUTOSCALING_LAG" ($v.cells.autoscaling.onLoad.lag | toString) }}
{{- end }}
{{- end }}
{{- /* Where the cells' pods run, what they pull with, ask for, and how they are exposed: JSON. */}}
{{- $pullSecrets := list }}
{{- range $v.imagePullSecrets }}{{- $pullSecrets = append $pullSecrets .name }}{{- end }}
{{- with $pullSecrets }}{{- $_ := set $env "LIANLUO_OPERATOR_IMAGE_PULL_SECRETS" (toJson .) }}{{- end }}
{{- with $v.cells.resources }}{{- $_ := set $env "LIANLUO_OPERATOR_CELL_RESOURCES" (toJson .) }}{{- end }}
{{- with $v.cells.nodeSelector }}{{- $_ := set $env "LIANLUO_OPERATOR_CELL_NODE_SELECTOR" (toJson .) }}{{- end }}
{{- with $v.cells.tolerations }}{{- $_ := set $env "LIANLUO_OPERATOR_CELL_TOLERATIONS" (toJson .) }}{{- end }}
{{- with $v.cells.serviceAnnotations }}{{- $_ := set $env "LIANLUO_OPERATOR_CELL_SERVICE_ANNOTATIONS" (toJson .) }}{{- end }}
{{- $_ := set $env "LIANLUO_OPERATOR_MEDIA_SERVICE_TYPE" $v.cells.mediaServiceType }}
{{- $_ := set $env "LIANLUO_OPERATOR_GATEWAY_SERVICE_TYPE" $v.cells.gatewayServiceType }}
{{- with $v.cells.gatewayPublicUrl }}{{- $_ := set $env "LIANLUO_OPERATOR_GATEWAY_PUBLIC_URL" . }}{{- end }}
{{- $_ := set $env "LIANLUO_OPERATOR_CONSOLE_SERVICE_TYPE" $v.cells.consoleServiceType }}
{{- $_ := set $env "LIANLUO_OPERATOR_VOICE_SERVICE_TYPE" $v.cells.voiceServiceType }}
{{- $_ := set $env "LIANLUO_OPERATOR_VOICE_TRUNK" $v.cells.voiceTrunk }}
{{- with $v.cells.voiceTlsSecret }}{{- $_ := set $env "LIANLUO_OPERATOR_VOICE_TLS_SECRET" . }}{{- end }}
{{- if $v.objectStorage.enabled }}
{{- $_ := set $env "LIANLUO_OPERATOR_OBJECT_STORE_BUCKET" (required "objectStorage.bucket is needed when objectStorage.enabled is true" $v.objectStorage.bucket) }}
{{- $_ := set $env "LIANLUO_OPERATOR_OBJECT_STORE_ENDPOINT" $v.objectStorage.endpoint }}
{{- $_ := set $env "LIANLUO_OPERATOR_OBJECT_STORE_REGION" $v.objectStorage.region }}
{{- $_ := set $env "LIANLUO_OPERATOR_OBJECT_STORE_SECRET" $v.objectStorage.secretName }}
{{- end }}
{{- if $v.cloudnativePG.enabled }}
{{- /* The cluster's owner role is given CREATEDB and CREATEROLE, so its app Secret can create cell databases and their services' roles. */}}
{{- $_ := set $env "LIANLUO_OPERATOR_DATABASE_ADMIN_URL" (dict "secretKeyRef" (dict "name" (printf "%s-app" $v.cloudnativePG.name) "key" "uri")) }}
{{- else }}
{{- $_ := set $env "LIANLUO_OPERATOR_DATABASE_ADMIN_URL" (dict "secretKeyRef" (dict "name" $v.secrets.databaseAdmin.name "key" $v.secrets.databaseAdmin.key)) }}
{{- end }}
{{- end }}
{{- $env = mergeOverwrite $env (deepCopy (default dict $v.env)) (deepCopy (default dict .component.env)) }}
{{- range $key := keys $env | sortAlpha }}
{{- $value := get $env $key }}
- name: {{ $key }}
{{- if kindIs "map" $value }}
  valueFrom:
    {{- toYaml $value | nindent 4 }}
{{- else }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* A health probe of a gRPC port: the gRPC kind where the cluster has it (1.24 and later). */}}
{{- define "lianluo.probe" -}}
{{- if semverCompare ">=1.24-0" .root.Capabilities.KubeVersion.Version -}}
grpc:
  port: {{ .port }}
{{- else -}}
tcpSocket:
  port: {{ .port }}
{{- end -}}
{{- end }}
