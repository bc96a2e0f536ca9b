"""The operator's entry for kopf (`kopf run -m lianluo.operator.handlers`): every handler."""

from __future__ import annotations

from typing import Any

import kopf

from lianluo.operator import cells, tenants
from lianluo.operator.kube import Kube
from lianluo.operator.move import Mover
from lianluo.operator.runtime import Runtime, configure, login
from lianluo.operator.settings import OperatorSettings
from lianluo.operator.template import HPA_API, PDB_API
from lianluo.operator.tenants_api import TenantsApi
from lianluo.runtime.settings import GrpcTlsSettings, KafkaSecuritySettings

__all__ = ["cells", "tenants"]


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Read the settings and connect; a missing setting stops the operator at once."""
    configure(settings)
    config = OperatorSettings()  # type: ignore[call-arg]
    kube = Kube.from_connection(login())
    grpc_tls = GrpcTlsSettings()
    tenants = TenantsApi(
        config.tenants_address,
        config.admin_key.get_secret_value(),
        config.rpc_timeout_seconds,
        cell_address=config.cell_tenants_address,
        cell_addresses=config.cell_addresses,
        tls=grpc_tls,
    )
    memo.runtime = Runtime(
        settings=config,
        kube=kube,
        tenants=tenants,
        mover=Mover(tenants, KafkaSecuritySettings()),
        # As the chart does with .Capabilities: a PDB or an HPA only where the API serves it.
        served=await kube.served([PDB_API, HPA_API]),
        grpc_tls=grpc_tls,
    )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    found = getattr(memo, "runtime", None)
    if isinstance(found, Runtime):
        await found.kube.close()
        await found.tenants.close()
