"""Run the operator: python -m lianluo.operator [--namespace NS] [--liveness URL]."""

from __future__ import annotations

import argparse

import kopf

import lianluo.operator.handlers  # noqa: F401 - registers every handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lianluo operator", description=__doc__)
    parser.add_argument("--namespace", action="append", default=[], help="watch only these")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="probe URL")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    # One JSON object per line with its timestamp and severity, as the services log, so one
    # log pipeline reads both.
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON)
    # One replica (Recreate) runs at a time, so no peering between operators is needed.
    kopf.run(
        standalone=True,
        namespaces=args.namespace,
        clusterwide=not args.namespace,
        liveness_endpoint=args.liveness or None,
        registry=kopf.get_default_registry(),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
