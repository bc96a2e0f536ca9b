"""Postgres access for the gateway's customer store. Every query is scoped by the tenant id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from lianluo.common.v1 import common_pb2 as common
from lianluo.gateway.v1 import gateway_pb2 as pb


def _customer(row: asyncpg.Record, identities: list[asyncpg.Record]) -> pb.Customer:
    out = pb.Customer(
        id=str(row["id"]), tenant_id=str(row["tenant_id"]), display_name=row["display_name"]
    )
    out.create_time.FromDatetime(row["created_at"])
    for i in identities:
        identity = out.identities.add(kind=i["kind"], value=i["value"])
        identity.first_seen_time.FromDatetime(i["first_seen_at"])
        if i["opted_out_at"] is not None:
            identity.opted_out_time.FromDatetime(i["opted_out_at"])
    return out


# One row of a table keyed by tenant and interaction (the table's name is a constant).
_OF_INTERACTION = "select * from %s where tenant_id = $1 and interaction_id = $2"


class Repository:
    async def resolve(
        self, conn: asyncpg.Connection, tid: uuid.UUID, kind: int, value: str, name: str
    ) -> uuid.UUID:
        """The customer of an identity, created with it the first time it is seen. Concurrent
        first sightings agree on one customer (the identity's key decides)."""
        found = await conn.fetchval(
            "select coalesce(c.merged_into, c.id) from identities i join customers c "
            "on c.tenant_id = i.tenant_id and c.id = i.customer_id "
            "where i.tenant_id = $1 and i.kind = $2 and i.value = $3",
            tid,
            kind,
            value,
        )
        if found is not None:
            return uuid.UUID(str(found))
        async with conn.transaction():
            new = uuid.uuid4()
            await conn.execute(
                "insert into customers (tenant_id, id, display_name) values ($1, $2, $3)",
                tid,
                new,
                name,
            )
            won = await conn.fetchval(
                "insert into identities (tenant_id, kind, value, customer_id) "
                "values ($1, $2, $3, $4) on conflict do nothing returning customer_id",
                tid,
                kind,
                value,
                new,
            )
            if won is None:  # another connection saw it first: keep theirs
                await conn.execute(
                    "delete from customers where tenant_id = $1 and id = $2", tid, new
                )
                found = await conn.fetchval(
                    "select customer_id from identities where tenant_id = $1 and kind = $2 "
                    "and value = $3",
                    tid,
                    kind,
                    value,
                )
                return uuid.UUID(str(found))
        return new

    async def get(
        self, conn: asyncpg.Connection, tid: uuid.UUID, customer_id: uuid.UUID
    ) -> pb.Customer | None:
        row = await conn.fetchrow(
            "select * from customers where tenant_id = $1 and id = "
            "coalesce((select merged_into from customers where tenant_id = $1 and id = $2), $2)",
            tid,
            customer_id,
        )
        if row is None:
            return None
        customer_id = row["id"]
        identities = await conn.fetch(
            "select * from identities where tenant_id = $1 and customer_id = $2 "
            "order by first_seen_at, kind, value",
            tid,
            customer_id,
        )
        return _customer(row, identities)

    async def find(
        self, conn: asyncpg.Connection, tid: uuid.UUID, kind: int, value: str
    ) -> pb.Customer | None:
        found = await conn.fetchval(
            "select customer_id from identities where tenant_id = $1 and kind = $2 and value = $3",
            tid,
            kind,
            value,
        )
        return None if found is None else await self.get(conn, tid, uuid.UUID(str(found)))

    async def link(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        customer_id: uuid.UUID,
        kind: int,
        value: str,
    ) -> None:
        """Make the identity this customer's; its former customer, if any, merges into this
        one (identities move; those merged into it follow). Run in a transaction."""
        former = await conn.fetchval(
            "select customer_id from identities where tenant_id = $1 and kind = $2 "
            "and value = $3 for update",
            tid,
            kind,
            value,
        )
        if former is None:
            await conn.execute(
                "insert into identities (tenant_id, kind, value, customer_id) "
                "values ($1, $2, $3, $4)",
                tid,
                kind,
                value,
                customer_id,
            )
            return
        if former == customer_id:
            return
        await conn.execute(
            "update identities set customer_id = $3 where tenant_id = $1 and customer_id = $2",
            tid,
            former,
            customer_id,
        )
        await conn.execute(
            "update customers set merged_into = $3 where tenant_id = $1 "
            "and (id = $2 or merged_into = $2)",
            tid,
            former,
            customer_id,
        )

    async def live(self, conn: asyncpg.Connection, tid: uuid.UUID, customer_id: uuid.UUID) -> bool:
        """Whether the customer exists and has not been merged into another."""
        found = await conn.fetchval(
            "select merged_into is null from customers where tenant_id = $1 and id = $2 for update",
            tid,
            customer_id,
        )
        return bool(found)

    async def remember_interaction(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        customer_id: uuid.UUID,
        interaction_id: uuid.UUID,
        channel: int,
    ) -> None:
        await conn.execute(
            "insert into customer_interactions (tenant_id, customer_id, interaction_id, channel) "
            "values ($1, $2, $3, $4) on conflict do nothing",
            tid,
            customer_id,
            interaction_id,
            channel,
        )

    async def conversations(
        self, conn: asyncpg.Connection, tid: uuid.UUID, customer_id: uuid.UUID, limit: int = 100
    ) -> list[asyncpg.Record]:
        """The customer's interactions, and those of the customers merged into them, newest
        first."""
        rows: list[asyncpg.Record] = await conn.fetch(
            "select i.* from customer_interactions i join customers c "
            "on c.tenant_id = i.tenant_id and c.id = i.customer_id "
            "where i.tenant_id = $1 and (c.id = $2 or c.merged_into = $2) "
            "order by i.started_at desc limit $3",
            tid,
            customer_id,
            limit,
        )
        return rows

    async def set_opt_out(
        self, conn: asyncpg.Connection, tid: uuid.UUID, kind: int, value: str, out: bool
    ) -> None:
        await conn.execute(
            "update identities set opted_out_at = case when $4 then now() end "
            "where tenant_id = $1 and kind = $2 and value = $3",
            tid,
            kind,
            value,
            out,
        )

    async def opted_out(
        self, conn: asyncpg.Connection, tid: uuid.UUID, kind: int, value: str
    ) -> bool:
        found = await conn.fetchval(
            "select opted_out_at is not null from identities "
            "where tenant_id = $1 and kind = $2 and value = $3",
            tid,
            kind,
            value,
        )
        return bool(found)

    # ------------------------------------------------------------------ notices

    async def notice_parts(
        self, conn: asyncpg.Connection, tid: uuid.UUID, delivery_id: uuid.UUID
    ) -> int | None:
        """How many messages a notice already sent went as; None when it was not sent."""
        found: int | None = await conn.fetchval(
            "select parts from notices where tenant_id = $1 and delivery_id = $2",
            tid,
            delivery_id,
        )
        return found

    async def add_notice(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        delivery_id: uuid.UUID,
        phone_number: str,
        parts: int,
        provider_ids: list[str],
    ) -> None:
        await conn.execute(
            "insert into notices (tenant_id, delivery_id, phone_number, parts, provider_ids) "
            "values ($1, $2, $3, $4, $5) on conflict do nothing",
            tid,
            delivery_id,
            phone_number,
            parts,
            provider_ids,
        )

    async def notice_of(
        self, conn: asyncpg.Connection, tid: uuid.UUID, provider_id: str
    ) -> uuid.UUID | None:
        """The delivery a message the provider names was sent for; None: not a notice."""
        found: uuid.UUID | None = await conn.fetchval(
            "select delivery_id from notices where tenant_id = $1 and provider_ids @> array[$2]",
            tid,
            provider_id,
        )
        return found

    # ------------------------------------------------------------------ conversations

    async def add_conversation(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        interaction_id: uuid.UUID,
        channel_id: uuid.UUID,
        address: str,
        participant: str,
        subject: str = "",
        language: str = "",
    ) -> None:
        await conn.execute(
            "insert into conversations (tenant_id, interaction_id, channel_id, "
            "customer_address, customer_participant, subject, language) "
            "values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing",
            tid,
            interaction_id,
            channel_id,
            address,
            participant,
            subject,
            language,
        )

    async def conversation(
        self, conn: asyncpg.Connection, tid: uuid.UUID, interaction_id: uuid.UUID
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await conn.fetchrow(
            _OF_INTERACTION % "conversations", tid, interaction_id
        )
        return row

    async def latest_conversation(
        self, conn: asyncpg.Connection, tid: uuid.UUID, channel_id: uuid.UUID, address: str
    ) -> asyncpg.Record | None:
        """The customer's newest conversation on a channel (SMS has no threads: the newest
        one continues while it is open)."""
        row: asyncpg.Record | None = await conn.fetchrow(
            "select * from conversations where tenant_id = $1 and channel_id = $2 "
            "and customer_address = $3 order by created_at desc limit 1",
            tid,
            channel_id,
            address,
        )
        return row

    async def thread_of(
        self, conn: asyncpg.Connection, tid: uuid.UUID, ids: list[str]
    ) -> asyncpg.Record | None:
        """The e-mail conversation the first known of `ids` belongs to."""
        row: asyncpg.Record | None = await conn.fetchrow(
            "select c.* from unnest($2::text[]) with ordinality as ref(id, n) "
            "join mail_messages m on m.tenant_id = $1 and m.message_id = ref.id "
            "join conversations c on c.tenant_id = $1 and c.interaction_id = m.interaction_id "
            "order by ref.n limit 1",
            tid,
            ids,
        )
        return row

    async def add_mail_message(
        self, conn: asyncpg.Connection, tid: uuid.UUID, message_id: str, interaction_id: uuid.UUID
    ) -> bool:
        """Remember a Message-ID in its thread; False when it was known already."""
        added = await conn.fetchval(
            "insert into mail_messages (tenant_id, message_id, interaction_id) "
            "values ($1, $2, $3) on conflict do nothing returning true",
            tid,
            message_id,
            interaction_id,
        )
        if added:
            await conn.execute(
                "update conversations set thread = (thread || $3::text)[greatest("
                "array_length(thread, 1) - 48, 1):] where tenant_id = $1 and interaction_id = $2",
                tid,
                interaction_id,
                message_id,
            )
        return bool(added)

    # ------------------------------------------------------------------ replies

    async def queue_reply(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        reply_id: uuid.UUID,
        interaction_id: uuid.UUID,
        content: bytes,
    ) -> None:
        await conn.execute(
            "insert into replies (tenant_id, id, interaction_id, content) "
            "values ($1, $2, $3, $4) on conflict do nothing",
            tid,
            reply_id,
            interaction_id,
            content,
        )

    async def due_replies(self, conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
        """Replies due now with their conversation, locked for this sender (others skip
        them), oldest first."""
        rows: list[asyncpg.Record] = await conn.fetch(
            "select r.*, c.channel_id, c.customer_address, c.subject, c.thread, c.language "
            "from replies r join conversations c "
            "on c.tenant_id = r.tenant_id and c.interaction_id = r.interaction_id "
            "where r.due_at <= now() order by r.due_at limit $1 for update of r skip locked",
            limit,
        )
        return rows

    async def sent_reply(
        self, conn: asyncpg.Connection, tid: uuid.UUID, reply_id: uuid.UUID
    ) -> None:
        await conn.execute("delete from replies where tenant_id = $1 and id = $2", tid, reply_id)

    async def retry_reply(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        reply_id: uuid.UUID,
        delay: float,
        error: str,
    ) -> None:
        await conn.execute(
            "update replies set attempts = attempts + 1, last_error = $4, "
            "due_at = now() + make_interval(secs => $3) where tenant_id = $1 and id = $2",
            tid,
            reply_id,
            delay,
            error[:500],
        )

    async def queue_text(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        reply_id: uuid.UUID,
        interaction_id: uuid.UUID,
        body: str,
        survey: bool = False,
    ) -> None:
        """A message of the gateway's own to the customer (the survey, its thanks), sent as
        replies are; a survey's text is made when it goes out."""
        await conn.execute(
            "insert into replies (tenant_id, id, interaction_id, body, survey) "
            "values ($1, $2, $3, $4, $5) on conflict do nothing",
            tid,
            reply_id,
            interaction_id,
            body,
            survey,
        )

    # ------------------------------------------------------------------ surveys

    async def add_survey(
        self, conn: asyncpg.Connection, tid: uuid.UUID, interaction_id: uuid.UUID
    ) -> bool:
        """Remember that the interaction's customer is asked; False when they were already."""
        added = await conn.fetchval(
            "insert into surveys (tenant_id, interaction_id) values ($1, $2) "
            "on conflict do nothing returning true",
            tid,
            interaction_id,
        )
        return bool(added)

    async def survey(
        self, conn: asyncpg.Connection, tid: uuid.UUID, interaction_id: uuid.UUID
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await conn.fetchrow(
            _OF_INTERACTION % "surveys", tid, interaction_id
        )
        return row

    async def drop_survey(
        self, conn: asyncpg.Connection, tid: uuid.UUID, interaction_id: uuid.UUID
    ) -> None:
        """Forget a survey that was not sent (the customer had opted out)."""
        await conn.execute(
            "delete from surveys where tenant_id = $1 and interaction_id = $2", tid, interaction_id
        )

    async def claim_survey(
        self, conn: asyncpg.Connection, tid: uuid.UUID, interaction_id: uuid.UUID, claim: bool
    ) -> bool:
        """Mark a survey answered (False: it was already), or not answered after a failure."""
        done = await conn.fetchval(
            "update surveys set rated_at = case when $3 then now() end "
            "where tenant_id = $1 and interaction_id = $2 and (rated_at is null) = $3 "
            "returning true",
            tid,
            interaction_id,
            claim,
        )
        return bool(done)

    # ------------------------------------------------------------------ attachments

    async def add_attachment(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        attachment_id: uuid.UUID,
        interaction_id: uuid.UUID,
        name: str,
        content_type: str,
        size: int,
        sha256: str,
        key: str,
    ) -> None:
        await conn.execute(
            "insert into attachments (tenant_id, id, interaction_id, name, content_type, "
            "size_bytes, sha256, object_key) values ($1, $2, $3, $4, $5, $6, $7, $8)",
            tid,
            attachment_id,
            interaction_id,
            name,
            content_type,
            size,
            sha256,
            key,
        )

    async def attachment(
        self, conn: asyncpg.Connection, tid: uuid.UUID, attachment_id: uuid.UUID
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await conn.fetchrow(
            "select * from attachments where tenant_id = $1 and id = $2", tid, attachment_id
        )
        return row

    async def drop_attachment(
        self, conn: asyncpg.Connection, tid: uuid.UUID, attachment_id: uuid.UUID
    ) -> None:
        await conn.execute(
            "delete from attachments where tenant_id = $1 and id = $2", tid, attachment_id
        )

    # ------------------------------------------------------------------ forms

    async def started(
        self, conn: asyncpg.Connection, tid: uuid.UUID, interaction_id: uuid.UUID
    ) -> asyncpg.Record | None:
        """The gateway's record of an interaction it started: its customer and channel."""
        row: asyncpg.Record | None = await conn.fetchrow(
            _OF_INTERACTION % "customer_interactions", tid, interaction_id
        )
        return row

    async def add_form(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        message_id: uuid.UUID,
        interaction_id: uuid.UUID,
        form: bytes,
    ) -> None:
        await conn.execute(
            "insert into forms (tenant_id, message_id, interaction_id, form) "
            "values ($1, $2, $3, $4) on conflict do nothing",
            tid,
            message_id,
            interaction_id,
            form,
        )

    async def form(
        self, conn: asyncpg.Connection, tid: uuid.UUID, message_id: uuid.UUID
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await conn.fetchrow(
            "select f.*, i.customer_id, i.channel from forms f join customer_interactions i "
            "on i.tenant_id = f.tenant_id and i.interaction_id = f.interaction_id "
            "where f.tenant_id = $1 and f.message_id = $2",
            tid,
            message_id,
        )
        return row

    async def claim_form(
        self, conn: asyncpg.Connection, tid: uuid.UUID, message_id: uuid.UUID, claim: bool
    ) -> bool:
        """Mark a form sent (False: it was already), or not sent again after a failure."""
        done = await conn.fetchval(
            "update forms set submitted_at = case when $3 then now() end "
            "where tenant_id = $1 and message_id = $2 and (submitted_at is null) = $3 "
            "returning true",
            tid,
            message_id,
            claim,
        )
        return bool(done)

    # ------------------------------------------------------------------ channel moves

    async def newest_interaction(
        self, conn: asyncpg.Connection, tid: uuid.UUID, customer_id: uuid.UUID
    ) -> asyncpg.Record | None:
        """The customer's newest interaction of the last day (merged customers' included)."""
        rows = await self.conversations(conn, tid, customer_id, 1)
        if not rows or rows[0]["started_at"] < datetime.now(UTC) - timedelta(days=1):
            return None
        found: asyncpg.Record = rows[0]
        return found

    async def follow(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        interaction_id: uuid.UUID,
        channel_id: uuid.UUID,
        address: str,
        participant: str,
    ) -> None:
        """Replies in the interaction go to this channel and address from now on."""
        await conn.execute(
            "insert into conversations (tenant_id, interaction_id, channel_id, "
            "customer_address, customer_participant) values ($1, $2, $3, $4, $5) "
            "on conflict (tenant_id, interaction_id) do update set channel_id = $3, "
            "customer_address = $4, customer_participant = $5",
            tid,
            interaction_id,
            channel_id,
            address,
            participant,
        )

    async def unfollow(
        self, conn: asyncpg.Connection, tid: uuid.UUID, interaction_id: uuid.UUID
    ) -> None:
        """The customer is back where the interaction started (the web chat): replies stop
        going to another channel."""
        await conn.execute(
            "delete from conversations where tenant_id = $1 and interaction_id = $2 and "
            "exists (select 1 from customer_interactions i where i.tenant_id = $1 "
            "and i.interaction_id = $2 and i.channel = $3)",
            tid,
            interaction_id,
            common.CHANNEL_WEB,
        )
