"""The operator's entry for kopf (`kopf run -m lianluo.operator.handlers`): every handler."""

from __future__ import annotations

from typing import Any

import kopf

from lianluo.operator import cells, tenants
from lianluo.operator.kube import Kube
from lianluo.operator.runtime import Runtime, configure, login
from lianluo.operator.settings import OperatorSettings
from lianluo.operator.tenants_api import TenantsApi

__all__ = ["cells", "tenants"]


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Read the settings and connect; a missing setting stops the operator at once."""
    configure(settings)
    config = OperatorSettings()  # type: ignore[call-arg]
    memo.runtime = Runtime(
        settings=config,
        kube=Kube.from_connection(login()),
        tenants=TenantsApi(
            config.tenants_address,
            config.admin_key.get_secret_value(),
            config.rpc_timeout_seconds,
            cell_address=config.cell_tenants_address,
        ),
    )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    found = getattr(memo, "runtime", None)
    if isinstance(found, Runtime):
        await found.kube.close()
        await found.tenants.close()
