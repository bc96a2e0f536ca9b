"""A new owner of a tenant's partitions carries on from the acd schema: the pending offer of the
replica that stopped still times out, and the contact goes to the next agent."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from acd_support import Acd, Decisions, Requests, start_acd
from conftest import Served, Stack

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc

pytestmark = pytest.mark.integration
OFFER_TIMEOUT = 6.0


async def test_a_new_owner_rebuilds_routing_state_after_the_old_one_stops(
    stack: Stack, tenants_service: Served
) -> None:
    decisions, requests = Decisions(stack), Requests(stack)
    old, old_task = await start_acd(stack, OFFER_TIMEOUT)
    await decisions.start()
    await requests.start()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{old.grpc.port}") as channel,
            grpc.aio.insecure_channel(tenants_service.address) as tenants,
        ):
            t = await Acd(old, channel, tenants).tenant({"first": {}, "second": {}})
            for i, name in enumerate(("first", "second")):
                await t.set_presence(name)
                await t.until_stats(lambda f, n=i + 1: f.agents_available >= n)
            interaction = await requests.route(t.id)
            first = (await decisions.wait(t.id, "routing.offer", interaction)).offer.offer
        old.request_stop()
        await old_task

        new, new_task = await start_acd(stack, OFFER_TIMEOUT)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{new.grpc.port}") as channel:
                # The new replica read the whole configuration at start; only its address differs.
                t = dataclasses.replace(t, acd=acd_rpc.AcdServiceStub(channel))
                timed_out = await decisions.wait(t.id, "routing.offer_timed_out", interaction)
                assert timed_out.offer_timed_out.offer_id == first.id
                second = (
                    await decisions.wait(t.id, "routing.offer", interaction, nth=2)
                ).offer.offer
                assert t.agent_name(second.agent_id) == "second"
                assert (await t.respond(second, accept=True)).state == acd.OFFER_STATE_ACCEPTED
                assigned = await decisions.wait(t.id, "routing.assign", interaction)
                assert assigned.assign.agent_id == second.agent_id
        finally:
            new.request_stop()
            await new_task
    finally:
        await requests.stop()
        await decisions.stop()
