import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

/**
 * The Postgres store's migrations, numbered and append-only: never edit one that shipped, add the next.
 * The schema name is validated as a plain identifier and always interpolated as an identifier.
 */
export const migrations = (schema: string): Record<string, Effect.Effect<void, unknown, SqlClient.SqlClient>> => ({
  "1_store": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    yield* sql`
      create table ${s}.runs (
        run_id          text primary key,
        job             text not null,
        run_key         text not null,
        params          jsonb not null,
        definition      jsonb not null,
        fingerprint     text not null,
        status          text not null,
        partition_count integer not null default 0,
        failure_budget  bigint not null default 9007199254740991,
        finalize_seq    integer not null default 1,
        created_at      timestamptz not null default clock_timestamp(),
        updated_at      timestamptz not null default clock_timestamp(),
        finished_at     timestamptz,
        reason          text
      )`
    // Checkpoint updates touch no indexed column and leave room on the page: they stay HOT (D16).
    yield* sql`
      create table ${s}.units (
        run_id                 text not null references ${s}.runs (run_id) on delete cascade,
        unit_id                text not null,
        job                    text not null,
        kind                   text not null,
        partition_key          text not null,
        weight                 double precision not null,
        status                 text not null default 'pending',
        step_index             integer not null default 0,
        cursor                 jsonb,
        chunk_seq              integer not null default 0,
        generation             integer not null default 0,
        attempt                integer not null default 1,
        crashes_since_progress integer not null default 0,
        fencing_token          bigint not null default 0,
        lease_owner            text,
        lease_expires_at       timestamptz,
        enqueue_seq            integer not null default 0,
        enqueued_at            timestamptz,
        retry_at               timestamptz,
        chunks                 bigint not null default 0,
        items                  bigint not null default 0,
        started_at             timestamptz,
        finished_at            timestamptz,
        last_error_tag         text,
        primary key (run_id, unit_id)
      ) with (fillfactor = 70)`
    yield* sql`create index units_live on ${s}.units (run_id, status) where status in ('pending', 'leased')`
    yield* sql`
      create table ${s}.ledger (
        run_id          text not null,
        unit_id         text not null,
        idempotency_key text not null,
        step            text not null,
        chunk_seq       integer not null,
        committed_at    timestamptz not null default clock_timestamp(),
        primary key (run_id, unit_id, idempotency_key)
      )`
    yield* sql`
      create table ${s}.failures (
        id            bigserial primary key,
        run_id        text not null,
        unit_id       text not null,
        partition_key text not null,
        step          text not null,
        error_tag     text not null,
        message       text not null,
        cause         text not null,
        cursor        text,
        attempt       integer not null,
        runbook_id    text not null,
        severity      text not null,
        outcome       text not null,
        at            timestamptz not null
      )`
    yield* sql`create index failures_run on ${s}.failures (run_id, id)`
    yield* sql`
      create table ${s}.audit (
        id      bigserial primary key,
        at      timestamptz not null default clock_timestamp(),
        actor   text not null,
        action  text not null,
        run_id  text not null,
        reason  text not null,
        details jsonb not null
      )`
    yield* sql`create index audit_run on ${s}.audit (run_id, id)`
  }),
  "2_queue": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // The Postgres queue: one table for every queue name, claimed with FOR UPDATE SKIP LOCKED.
    yield* sql`
      create table ${s}.queue_messages (
        id            bigserial primary key,
        queue         text not null,
        body          text not null,
        group_id      text,
        visible_at    timestamptz not null default clock_timestamp(),
        receive_count integer not null default 0,
        receipt       text,
        sent_at       timestamptz not null default clock_timestamp()
      ) with (fillfactor = 80)`
    yield* sql`create index queue_messages_ready on ${s}.queue_messages (queue, visible_at, id)`
    yield* sql`create unique index queue_messages_receipt on ${s}.queue_messages (receipt) where receipt is not null`
    yield* sql`
      create table ${s}.queue_dead (
        id            bigint primary key,
        queue         text not null,
        body          text not null,
        reason        text not null,
        receive_count integer not null,
        at            timestamptz not null default clock_timestamp()
      )`
    yield* sql`create index queue_dead_queue on ${s}.queue_dead (queue, id)`
  }),
  "3_commit_chunk": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // The framework's one statement per chunk (D3), as a function: PL/pgSQL keeps its plans per
    // session, so a chunk pays neither the parse nor the planning of the compare-and-set again.
    // Returns the run's status, or null when nothing matched (lease lost or checkpoint moved).
    yield* sql`
      create function ${s}.commit_chunk(
        p_run text, p_unit text, p_token bigint, p_worker text, p_from_step integer, p_from_seq integer,
        p_to_step integer, p_to_seq integer, p_cursor jsonb, p_items bigint, p_done boolean, p_key text,
        p_step text, p_lease_ms double precision
      ) returns text language plpgsql as $$
      declare
        v_status text;
      begin
        update ${s}.units set
          step_index = p_to_step, cursor = p_cursor, chunk_seq = p_to_seq, attempt = 1,
          crashes_since_progress = 0, chunks = chunks + 1, items = items + p_items, last_error_tag = null,
          status = case when p_done then 'succeeded' else status end,
          lease_owner = case when p_done then null else lease_owner end,
          lease_expires_at = case when p_done then null
            else clock_timestamp() + p_lease_ms * interval '1 millisecond' end,
          finished_at = case when p_done then clock_timestamp() else finished_at end
        where run_id = p_run and unit_id = p_unit and fencing_token = p_token and lease_owner = p_worker
          and status = 'leased' and lease_expires_at > clock_timestamp()
          and step_index = p_from_step and chunk_seq = p_from_seq;
        if not found then
          return null;
        end if;
        insert into ${s}.ledger (run_id, unit_id, idempotency_key, step, chunk_seq)
        values (p_run, p_unit, p_key, p_step, p_from_seq)
        on conflict do nothing;
        select status into v_status from ${s}.runs where run_id = p_run;
        return v_status;
      end
      $$`
  }),
  "4_job_slots": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // Job-wide in-flight caps (D16): `concurrency.total` slot rows per job, claimed FOR UPDATE SKIP LOCKED
    // with the unit. A slot is free when it has no holder or its expiry (the holder's lease, renewed by
    // the heartbeat) has passed; a unit that ends frees its slot in the statement that ends it.
    yield* sql`
      create table ${s}.job_slots (
        job           text not null,
        slot          integer not null,
        run_id        text,
        unit_id       text,
        fencing_token bigint,
        expires_at    timestamptz,
        primary key (job, slot)
      ) with (fillfactor = 50)`
    // commit_chunk as in 3, plus: the chunk that finishes its unit frees the unit's slot.
    yield* sql`
      create or replace function ${s}.commit_chunk(
        p_run text, p_unit text, p_token bigint, p_worker text, p_from_step integer, p_from_seq integer,
        p_to_step integer, p_to_seq integer, p_cursor jsonb, p_items bigint, p_done boolean, p_key text,
        p_step text, p_lease_ms double precision
      ) returns text language plpgsql as $$
      declare
        v_status text;
      begin
        update ${s}.units set
          step_index = p_to_step, cursor = p_cursor, chunk_seq = p_to_seq, attempt = 1,
          crashes_since_progress = 0, chunks = chunks + 1, items = items + p_items, last_error_tag = null,
          status = case when p_done then 'succeeded' else status end,
          lease_owner = case when p_done then null else lease_owner end,
          lease_expires_at = case when p_done then null
            else clock_timestamp() + p_lease_ms * interval '1 millisecond' end,
          finished_at = case when p_done then clock_timestamp() else finished_at end
        where run_id = p_run and unit_id = p_unit and fencing_token = p_token and lease_owner = p_worker
          and status = 'leased' and lease_expires_at > clock_timestamp()
          and step_index = p_from_step and chunk_seq = p_from_seq;
        if not found then
          return null;
        end if;
        insert into ${s}.ledger (run_id, unit_id, idempotency_key, step, chunk_seq)
        values (p_run, p_unit, p_key, p_step, p_from_seq)
        on conflict do nothing;
        if p_done then
          update ${s}.job_slots set run_id = null, unit_id = null, fencing_token = null, expires_at = null
          where run_id = p_run and unit_id = p_unit and fencing_token = p_token;
        end if;
        select status into v_status from ${s}.runs where run_id = p_run;
        return v_status;
      end
      $$`
  }),
  "5_queue_receive": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // The Postgres queue's receive as a function: PL/pgSQL keeps the plan of this statement per session,
    // so a receive pays neither its parse nor its planning again. Takes up to p_max ready messages
    // (FOR UPDATE SKIP LOCKED), dead-letters those already received p_max_receives times, and makes the
    // rest invisible for p_visibility_ms with a new receipt.
    yield* sql`
      create function ${s}.queue_receive(p_queue text, p_max integer, p_visibility_ms double precision,
        p_max_receives integer)
      returns table (id bigint, body text, receive_count integer, receipt text) language plpgsql as $$
      #variable_conflict use_column
      begin
        return query
        with picked as (
          select q.id, q.receive_count from ${s}.queue_messages q
          where q.queue = p_queue and q.visible_at <= clock_timestamp()
          order by q.visible_at, q.id
          limit p_max
          for update skip locked),
        dead as (
          delete from ${s}.queue_messages m using picked
          where m.id = picked.id and picked.receive_count >= p_max_receives
          returning m.id, m.queue, m.body, m.receive_count),
        buried as (
          insert into ${s}.queue_dead (id, queue, body, reason, receive_count)
          select d.id, d.queue, d.body,
            'received ' || d.receive_count || ' times without being acknowledged (maxReceives ' || p_max_receives || ')',
            d.receive_count
          from dead d
          on conflict (id) do nothing)
        update ${s}.queue_messages m set
          receive_count = m.receive_count + 1,
          visible_at = clock_timestamp() + p_visibility_ms * interval '1 millisecond',
          receipt = m.id || ':' || (m.receive_count + 1)
        from picked
        where m.id = picked.id and picked.receive_count < p_max_receives
        returning m.id, m.body, m.receive_count, m.receipt;
      end
      $$`
  }),
  "6_resource_limits": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // Per-resource limits (PgResourceLimiter, D18): one row per resource with its settings and its token
    // bucket (tokens may go below zero: reservations waiting for their due time). The bucket columns
    // change on every permit, so no index covers them and the page keeps room: updates stay HOT.
    yield* sql`
      create table ${s}.resource_limits (
        resource          text primary key,
        chunks_per_second double precision,
        burst             integer,
        in_flight         integer,
        tokens            double precision not null default 0,
        refilled_at       timestamptz not null default clock_timestamp(),
        source            text not null default 'default',
        updated_at        timestamptz not null default clock_timestamp(),
        updated_by        text not null,
        reason            text not null
      ) with (fillfactor = 50)`
    // In-flight caps: slot rows 1..in_flight per resource, claimed FOR UPDATE SKIP LOCKED before a chunk's
    // transaction and freed after it; a slot whose holder stopped renewing it is free once it expires.
    yield* sql`
      create table ${s}.resource_slots (
        resource   text not null,
        slot       integer not null,
        permit_id  text,
        run_id     text,
        unit_id    text,
        worker_id  text,
        expires_at timestamptz,
        primary key (resource, slot)
      ) with (fillfactor = 50)`
    // Units waiting for a permit, for status: a row is current while `until` is ahead of the clock.
    yield* sql`
      create table ${s}.resource_waits (
        run_id        text not null,
        unit_id       text not null,
        resource      text not null,
        kind          text not null,
        partition_key text not null,
        job           text not null,
        step          text not null,
        worker_id     text not null,
        since         timestamptz not null,
        until         timestamptz not null,
        primary key (run_id, unit_id)
      )`
    yield* sql`
      create table ${s}.resource_limit_audit (
        id       bigserial primary key,
        at       timestamptz not null default clock_timestamp(),
        actor    text not null,
        reason   text not null,
        resource text not null,
        before   jsonb,
        after    jsonb not null
      )`
    yield* sql`create index resource_limit_audit_resource on ${s}.resource_limit_audit (resource, id)`
  }),
  "7_range_units": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // Range-split partitions (D1): a range unit names its partition unit and carries its encoded key
    // range; the partition waits in status 'waiting' until the split barrier moves it on (D7).
    yield* sql`alter table ${s}.units add column parent_unit_id text, add column range jsonb`
    yield* sql`
      create index units_ranges on ${s}.units (run_id, parent_unit_id, generation)
      where parent_unit_id is not null`
    yield* sql`create index units_waiting on ${s}.units (run_id) where status = 'waiting'`
  }),
  "8_quarantine": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // Item-level skips (D17): the ledger keeps each chunk's item count, so a skip budget in percent has
    // its denominator per step; commit_chunk as in 4, plus the count.
    yield* sql`alter table ${s}.ledger add column items bigint not null default 0`
    yield* sql`
      create or replace function ${s}.commit_chunk(
        p_run text, p_unit text, p_token bigint, p_worker text, p_from_step integer, p_from_seq integer,
        p_to_step integer, p_to_seq integer, p_cursor jsonb, p_items bigint, p_done boolean, p_key text,
        p_step text, p_lease_ms double precision
      ) returns text language plpgsql as $$
      declare
        v_status text;
      begin
        update ${s}.units set
          step_index = p_to_step, cursor = p_cursor, chunk_seq = p_to_seq, attempt = 1,
          crashes_since_progress = 0, chunks = chunks + 1, items = items + p_items, last_error_tag = null,
          status = case when p_done then 'succeeded' else status end,
          lease_owner = case when p_done then null else lease_owner end,
          lease_expires_at = case when p_done then null
            else clock_timestamp() + p_lease_ms * interval '1 millisecond' end,
          finished_at = case when p_done then clock_timestamp() else finished_at end
        where run_id = p_run and unit_id = p_unit and fencing_token = p_token and lease_owner = p_worker
          and status = 'leased' and lease_expires_at > clock_timestamp()
          and step_index = p_from_step and chunk_seq = p_from_seq;
        if not found then
          return null;
        end if;
        insert into ${s}.ledger (run_id, unit_id, idempotency_key, step, chunk_seq, items)
        values (p_run, p_unit, p_key, p_step, p_from_seq, p_items)
        on conflict do nothing;
        if p_done then
          update ${s}.job_slots set run_id = null, unit_id = null, fencing_token = null, expires_at = null
          where run_id = p_run and unit_id = p_unit and fencing_token = p_token;
        end if;
        select status into v_status from ${s}.runs where run_id = p_run;
        return v_status;
      end
      $$`
    // Items a chunk set aside, one row per (run, step, partition, item id): the item encoded with the
    // step's item schema, the error and its runbook, and the chunk's start cursor and key range so that
    // an operator's re-run can hand the item to the step's write as it first saw it.
    yield* sql`
      create table ${s}.quarantine (
        run_id         text not null references ${s}.runs (run_id) on delete cascade,
        step           text not null,
        partition_key  text not null,
        item_id        text not null,
        unit_id        text not null,
        item           jsonb not null,
        cursor         jsonb,
        range          jsonb,
        error_tag      text not null,
        message        text not null,
        runbook_id     text not null,
        status         text not null default 'quarantined',
        attempts       integer not null default 1,
        quarantined_at timestamptz not null default clock_timestamp(),
        updated_at     timestamptz not null default clock_timestamp(),
        primary key (run_id, step, partition_key, item_id)
      )`
    yield* sql`create index quarantine_status on ${s}.quarantine (run_id, status)`
  }),
  "9_items_per_second": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // An item rate per resource (PgResourceLimiter): its settings and a second token bucket with its own
    // last refill. Like the chunk bucket's, these columns change on every permit and no index covers
    // them, so updates of the row stay HOT.
    yield* sql`
      alter table ${s}.resource_limits
        add column items_per_second  double precision,
        add column items_burst       bigint,
        add column item_tokens       double precision not null default 0,
        add column items_refilled_at timestamptz not null default clock_timestamp()`
  }),
  "10_finalize_in_commit": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // Completion by compare-and-set (D7), race-free without a check after every unit: every finisher
    // checks under the run row's lock, each check a statement of its own (so, in READ COMMITTED, a
    // fresh snapshot taken after the lock). A finisher that checks inside its own transaction holds the
    // lock until it commits, so whichever checks last sees every other finisher's commit.
    yield* sql`
      create function ${s}.try_finalize(p_run text) returns text language plpgsql as $$
      declare
        v_unit text;
      begin
        perform 1 from ${s}.runs where run_id = p_run for no key update;
        with r as (
          update ${s}.runs set status = 'finalizing', updated_at = clock_timestamp()
          where run_id = p_run and status in ('running', 'failing')
            and not exists (
              select 1 from ${s}.units
              where run_id = p_run and kind <> 'finalize' and status in ('pending', 'leased', 'waiting'))
          returning run_id, job, finalize_seq)
        insert into ${s}.units (run_id, unit_id, job, kind, partition_key, weight)
        select run_id, 'finalize-' || finalize_seq, job, 'finalize', '', 0 from r
        on conflict do nothing
        returning unit_id into v_unit;
        return v_unit;
      end
      $$`
    // commit_chunk as in 8, plus: the chunk that ends its unit takes the run row's lock first (runs
    // before units, the order operator actions take them in) and finalizes the run when it ended the
    // last open unit, in the chunk's own transaction: no statement after the commit. A caller sees
    // 'finalizing' returned only from the commit that did it.
    yield* sql`
      create or replace function ${s}.commit_chunk(
        p_run text, p_unit text, p_token bigint, p_worker text, p_from_step integer, p_from_seq integer,
        p_to_step integer, p_to_seq integer, p_cursor jsonb, p_items bigint, p_done boolean, p_key text,
        p_step text, p_lease_ms double precision
      ) returns text language plpgsql as $$
      declare
        v_status text;
      begin
        if p_done then
          perform 1 from ${s}.runs where run_id = p_run for no key update;
        end if;
        update ${s}.units set
          step_index = p_to_step, cursor = p_cursor, chunk_seq = p_to_seq, attempt = 1,
          crashes_since_progress = 0, chunks = chunks + 1, items = items + p_items, last_error_tag = null,
          status = case when p_done then 'succeeded' else status end,
          lease_owner = case when p_done then null else lease_owner end,
          lease_expires_at = case when p_done then null
            else clock_timestamp() + p_lease_ms * interval '1 millisecond' end,
          finished_at = case when p_done then clock_timestamp() else finished_at end
        where run_id = p_run and unit_id = p_unit and fencing_token = p_token and lease_owner = p_worker
          and status = 'leased' and lease_expires_at > clock_timestamp()
          and step_index = p_from_step and chunk_seq = p_from_seq;
        if not found then
          return null;
        end if;
        insert into ${s}.ledger (run_id, unit_id, idempotency_key, step, chunk_seq, items)
        values (p_run, p_unit, p_key, p_step, p_from_seq, p_items)
        on conflict do nothing;
        if p_done then
          update ${s}.job_slots set run_id = null, unit_id = null, fencing_token = null, expires_at = null
          where run_id = p_run and unit_id = p_unit and fencing_token = p_token;
          perform ${s}.try_finalize(p_run);
        end if;
        select status into v_status from ${s}.runs where run_id = p_run;
        return v_status;
      end
      $$`
  }),
  "11_completion_check_by_index": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // The completion check of 10 asked for the run's units in ('pending', 'leased', 'waiting') in one
    // condition, which no partial index implies: it walked every unit of the run through the primary
    // key, so a run of n units paid O(n) per finished unit, O(n^2) in all (about 1 ms per unit at
    // 2,000 units). Asked as two conditions, each is a probe of its partial index (units_live,
    // units_waiting), which holds only the run's open units.
    yield* sql`
      create or replace function ${s}.try_finalize(p_run text) returns text language plpgsql as $$
      declare
        v_unit text;
      begin
        perform 1 from ${s}.runs where run_id = p_run for no key update;
        with r as (
          update ${s}.runs set status = 'finalizing', updated_at = clock_timestamp()
          where run_id = p_run and status in ('running', 'failing')
            and not exists (
              select 1 from ${s}.units
              where run_id = p_run and status in ('pending', 'leased') and kind <> 'finalize')
            and not exists (
              select 1 from ${s}.units where run_id = p_run and status = 'waiting' and kind <> 'finalize')
          returning run_id, job, finalize_seq)
        insert into ${s}.units (run_id, unit_id, job, kind, partition_key, weight)
        select run_id, 'finalize-' || finalize_seq, job, 'finalize', '', 0 from r
        on conflict do nothing
        returning unit_id into v_unit;
        return v_unit;
      end
      $$`
  }),
  "12_claim_function": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // The claim as a function, like commit_chunk: its statements' plans are cached per connection,
    // where the one-statement claim (a CTE over units, runs and job_slots) was planned on every call,
    // which took longer than running it (about 0.25 ms against 0.1 ms). Same conditions, same effect:
    // a job-wide cap takes a free slot row FOR UPDATE SKIP LOCKED first and holds it only if the unit
    // is claimed. Returns the claimed unit's row, or no row.
    yield* sql`
      create function ${s}.claim_unit(
        p_run text, p_unit text, p_seq integer, p_worker text, p_lease_ms double precision, p_job text,
        p_slots integer
      ) returns setof ${s}.units language plpgsql rows 1 as $$
      declare
        v_slot integer;
        v_unit ${s}.units;
      begin
        if p_slots is not null then
          select slot into v_slot from ${s}.job_slots
          where job = p_job and slot <= p_slots and (unit_id is null or expires_at <= clock_timestamp())
          order by slot limit 1
          for update skip locked;
          if v_slot is null then
            return;
          end if;
        end if;
        update ${s}.units u set
          status = 'leased',
          fencing_token = u.fencing_token + 1,
          lease_owner = p_worker,
          lease_expires_at = clock_timestamp() + p_lease_ms * interval '1 millisecond',
          retry_at = null,
          started_at = coalesce(u.started_at, clock_timestamp()),
          crashes_since_progress = u.crashes_since_progress + case when u.status = 'leased' then 1 else 0 end,
          attempt = u.attempt + case when u.status = 'leased' then 1 else 0 end
        from ${s}.runs r
        where u.run_id = p_run and u.unit_id = p_unit and r.run_id = u.run_id and u.enqueue_seq <= p_seq
          and case when u.kind = 'finalize' then r.status = 'finalizing' else r.status = 'running' end
          and (u.status = 'pending' or (u.status = 'leased' and u.lease_expires_at <= clock_timestamp()))
          and (u.retry_at is null or u.retry_at <= clock_timestamp() or u.status = 'leased')
        returning u.* into v_unit;
        if not found then
          return;
        end if;
        if v_slot is not null then
          update ${s}.job_slots set run_id = v_unit.run_id, unit_id = v_unit.unit_id,
            fencing_token = v_unit.fencing_token, expires_at = v_unit.lease_expires_at
          where job = p_job and slot = v_slot;
        end if;
        return next v_unit;
      end
      $$`
  }),
  "13_claim_and_commit_by_key": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // The claim (12) and the commit (10) each updated their unit with its state in the WHERE clause
    // (status pending or leased), which the partial index units_live implies. On a freshly filled units
    // table both indexes look alike to the planner, and the plan PL/pgSQL caches per connection walked
    // units_live by run_id, filtering on unit_id: every claim read all of the run's live units (3,000
    // reads per claim at the start of a 3,000-partition run, quadratic over the run), every commit all
    // of its leased units. Here each locks its unit by primary key (a lookup no partial index can serve),
    // checks the same conditions on the row it holds, and updates it by primary key. Same conditions,
    // same effect, same lock order (job slot, then run, then unit).
    yield* sql`
      create or replace function ${s}.claim_unit(
        p_run text, p_unit text, p_seq integer, p_worker text, p_lease_ms double precision, p_job text,
        p_slots integer
      ) returns setof ${s}.units language plpgsql rows 1 as $$
      declare
        v_slot integer;
        v_unit ${s}.units;
        v_run_status text;
      begin
        if p_slots is not null then
          select slot into v_slot from ${s}.job_slots
          where job = p_job and slot <= p_slots and (unit_id is null or expires_at <= clock_timestamp())
          order by slot limit 1
          for update skip locked;
          if v_slot is null then
            return;
          end if;
        end if;
        select * into v_unit from ${s}.units where run_id = p_run and unit_id = p_unit for no key update;
        if not found then
          return;
        end if;
        select status into v_run_status from ${s}.runs where run_id = p_run;
        if (v_unit.enqueue_seq <= p_seq
            and case when v_unit.kind = 'finalize' then v_run_status = 'finalizing' else v_run_status = 'running' end
            and (v_unit.status = 'pending'
              or (v_unit.status = 'leased' and v_unit.lease_expires_at <= clock_timestamp()))
            and (v_unit.retry_at is null or v_unit.retry_at <= clock_timestamp() or v_unit.status = 'leased'))
          is not true then
          return;
        end if;
        update ${s}.units u set
          status = 'leased',
          fencing_token = u.fencing_token + 1,
          lease_owner = p_worker,
          lease_expires_at = clock_timestamp() + p_lease_ms * interval '1 millisecond',
          retry_at = null,
          started_at = coalesce(u.started_at, clock_timestamp()),
          crashes_since_progress = u.crashes_since_progress + case when u.status = 'leased' then 1 else 0 end,
          attempt = u.attempt + case when u.status = 'leased' then 1 else 0 end
        where u.run_id = p_run and u.unit_id = p_unit
        returning u.* into v_unit;
        if v_slot is not null then
          update ${s}.job_slots set run_id = v_unit.run_id, unit_id = v_unit.unit_id,
            fencing_token = v_unit.fencing_token, expires_at = v_unit.lease_expires_at
          where job = p_job and slot = v_slot;
        end if;
        return next v_unit;
      end
      $$`
    yield* sql`
      create or replace function ${s}.commit_chunk(
        p_run text, p_unit text, p_token bigint, p_worker text, p_from_step integer, p_from_seq integer,
        p_to_step integer, p_to_seq integer, p_cursor jsonb, p_items bigint, p_done boolean, p_key text,
        p_step text, p_lease_ms double precision
      ) returns text language plpgsql as $$
      declare
        v_status text;
        v_unit ${s}.units;
      begin
        if p_done then
          perform 1 from ${s}.runs where run_id = p_run for no key update;
        end if;
        select * into v_unit from ${s}.units where run_id = p_run and unit_id = p_unit for no key update;
        if (v_unit.fencing_token = p_token and v_unit.lease_owner = p_worker and v_unit.status = 'leased'
            and v_unit.lease_expires_at > clock_timestamp()
            and v_unit.step_index = p_from_step and v_unit.chunk_seq = p_from_seq) is not true then
          return null;
        end if;
        update ${s}.units set
          step_index = p_to_step, cursor = p_cursor, chunk_seq = p_to_seq, attempt = 1,
          crashes_since_progress = 0, chunks = chunks + 1, items = items + p_items, last_error_tag = null,
          status = case when p_done then 'succeeded' else status end,
          lease_owner = case when p_done then null else lease_owner end,
          lease_expires_at = case when p_done then null
            else clock_timestamp() + p_lease_ms * interval '1 millisecond' end,
          finished_at = case when p_done then clock_timestamp() else finished_at end
        where run_id = p_run and unit_id = p_unit;
        insert into ${s}.ledger (run_id, unit_id, idempotency_key, step, chunk_seq, items)
        values (p_run, p_unit, p_key, p_step, p_from_seq, p_items)
        on conflict do nothing;
        if p_done then
          update ${s}.job_slots set run_id = null, unit_id = null, fencing_token = null, expires_at = null
          where run_id = p_run and unit_id = p_unit and fencing_token = p_token;
          perform ${s}.try_finalize(p_run);
        end if;
        select status into v_status from ${s}.runs where run_id = p_run;
        return v_status;
      end
      $$`
  }),
  "14_unit_end_without_run_lock": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // Every commit that ended a unit took the run row's lock (10) and held it through its COMMIT, so the
    // run's unit ends queued behind each other's WAL flush: about 2 ms each on the development VM, a
    // ceiling of some 450 unit ends a second per run, however many workers. The lock is what makes the
    // completion check race-free; it is only needed when no other unit is sure to check after us.
    //
    // A pending unit is sure to: the ending commit locks one (FOR SHARE, which a claim, a cancel or a
    // skip must wait for), so that unit is claimed, ends, and checks only after this commit is visible,
    // and by induction some later check sees every end. Such a commit takes no run lock and checks
    // nothing. Only a commit that finds no pending unit (the run's tail: every open unit running or
    // waiting for its ranges) takes the run lock and checks, as before: the run first, then the unit,
    // the order operator actions take them in. A never-sent unit is the preferred witness, since a
    // worker may be about to claim a sent one.
    yield* sql`
      create or replace function ${s}.commit_chunk(
        p_run text, p_unit text, p_token bigint, p_worker text, p_from_step integer, p_from_seq integer,
        p_to_step integer, p_to_seq integer, p_cursor jsonb, p_items bigint, p_done boolean, p_key text,
        p_step text, p_lease_ms double precision
      ) returns text language plpgsql as $$
      declare
        v_status text;
        v_unit ${s}.units;
        v_witness text;
        v_tail boolean := false;
      begin
        -- The tail (no pending unit left): the run lock first, then the unit, as operator actions take them.
        if p_done and not exists (
          select 1 from ${s}.units where run_id = p_run and status = 'pending' and kind <> 'finalize'
        ) then
          v_tail := true;
          perform 1 from ${s}.runs where run_id = p_run for no key update;
        end if;
        select * into v_unit from ${s}.units where run_id = p_run and unit_id = p_unit for no key update;
        if (v_unit.fencing_token = p_token and v_unit.lease_owner = p_worker and v_unit.status = 'leased'
            and v_unit.lease_expires_at > clock_timestamp()
            and v_unit.step_index = p_from_step and v_unit.chunk_seq = p_from_seq) is not true then
          return null;
        end if;
        if p_done and not v_tail then
          -- SKIP LOCKED: taking a witness never waits, so holding the unit's row here makes no cycle.
          select unit_id into v_witness from ${s}.units
          where run_id = p_run and status = 'pending' and kind <> 'finalize' and enqueued_at is null
          limit 1 for share skip locked;
          if v_witness is null then
            select unit_id into v_witness from ${s}.units
            where run_id = p_run and status = 'pending' and kind <> 'finalize'
            limit 1 for share skip locked;
          end if;
          if v_witness is null then
            -- Every pending unit was claimed or locked since the probe above: check under the lock. The
            -- one place the unit's row is held before the run's: an operator action on the run at this
            -- very moment can deadlock with it, and Postgres aborts one of the two (the chunk retries).
            v_tail := true;
            perform 1 from ${s}.runs where run_id = p_run for no key update;
          end if;
        end if;
        update ${s}.units set
          step_index = p_to_step, cursor = p_cursor, chunk_seq = p_to_seq, attempt = 1,
          crashes_since_progress = 0, chunks = chunks + 1, items = items + p_items, last_error_tag = null,
          status = case when p_done then 'succeeded' else status end,
          lease_owner = case when p_done then null else lease_owner end,
          lease_expires_at = case when p_done then null
            else clock_timestamp() + p_lease_ms * interval '1 millisecond' end,
          finished_at = case when p_done then clock_timestamp() else finished_at end
        where run_id = p_run and unit_id = p_unit;
        insert into ${s}.ledger (run_id, unit_id, idempotency_key, step, chunk_seq, items)
        values (p_run, p_unit, p_key, p_step, p_from_seq, p_items)
        on conflict do nothing;
        if p_done then
          update ${s}.job_slots set run_id = null, unit_id = null, fencing_token = null, expires_at = null
          where run_id = p_run and unit_id = p_unit and fencing_token = p_token;
          if v_tail then
            perform ${s}.try_finalize(p_run);
          end if;
        end if;
        select status into v_status from ${s}.runs where run_id = p_run;
        return v_status;
      end
      $$`
  }),
  "15_feed_by_index": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // The feeder counted and sorted every live unit of every run on each feed (a 20,000-unit run: about
    // 32 ms a feed, hundreds of feeds). It needs only the units sent and not ended (bounded by the
    // outstanding cap, plus the few whose message went stale) and the next few never-sent ones in
    // feed order: one index for each.
    yield* sql`
      create index units_sent on ${s}.units (enqueued_at)
      where status in ('pending', 'leased') and enqueued_at is not null`
    yield* sql`
      create index units_unsent on ${s}.units (((kind = 'finalize')) desc, weight desc, unit_id)
      where status = 'pending' and enqueued_at is null`
    // A unit made pending again by a retry has no send time, yet its old message can still claim it:
    // a claim now stamps one, so every leased unit is among the sent ones the feeder reads.
    yield* sql`
      create or replace function ${s}.claim_unit(
        p_run text, p_unit text, p_seq integer, p_worker text, p_lease_ms double precision, p_job text,
        p_slots integer
      ) returns setof ${s}.units language plpgsql rows 1 as $$
      declare
        v_slot integer;
        v_unit ${s}.units;
        v_run_status text;
      begin
        if p_slots is not null then
          select slot into v_slot from ${s}.job_slots
          where job = p_job and slot <= p_slots and (unit_id is null or expires_at <= clock_timestamp())
          order by slot limit 1
          for update skip locked;
          if v_slot is null then
            return;
          end if;
        end if;
        select * into v_unit from ${s}.units where run_id = p_run and unit_id = p_unit for no key update;
        if not found then
          return;
        end if;
        select status into v_run_status from ${s}.runs where run_id = p_run;
        if (v_unit.enqueue_seq <= p_seq
            and case when v_unit.kind = 'finalize' then v_run_status = 'finalizing' else v_run_status = 'running' end
            and (v_unit.status = 'pending'
              or (v_unit.status = 'leased' and v_unit.lease_expires_at <= clock_timestamp()))
            and (v_unit.retry_at is null or v_unit.retry_at <= clock_timestamp() or v_unit.status = 'leased'))
          is not true then
          return;
        end if;
        update ${s}.units u set
          status = 'leased',
          fencing_token = u.fencing_token + 1,
          lease_owner = p_worker,
          enqueued_at = coalesce(u.enqueued_at, clock_timestamp()),
          lease_expires_at = clock_timestamp() + p_lease_ms * interval '1 millisecond',
          retry_at = null,
          started_at = coalesce(u.started_at, clock_timestamp()),
          crashes_since_progress = u.crashes_since_progress + case when u.status = 'leased' then 1 else 0 end,
          attempt = u.attempt + case when u.status = 'leased' then 1 else 0 end
        where u.run_id = p_run and u.unit_id = p_unit
        returning u.* into v_unit;
        if v_slot is not null then
          update ${s}.job_slots set run_id = v_unit.run_id, unit_id = v_unit.unit_id,
            fencing_token = v_unit.fencing_token, expires_at = v_unit.lease_expires_at
          where job = p_job and slot = v_slot;
        end if;
        return next v_unit;
      end
      $$`
    yield* sql`update ${s}.units set enqueued_at = clock_timestamp() where status = 'leased' and enqueued_at is null`
  }),
  "16_commit_in_one_update": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // commit_chunk as in 14, with the unit's compare-and-set back in one UPDATE by primary key (13 had
    // made it a locking read, a check and an update: a second statement on every chunk). The condition
    // names no status, so no partial index of live units can serve it: the fencing token and the lease
    // owner already say the unit is leased to the caller, since every path that takes a unit from its
    // holder clears the owner or moves the token.
    yield* sql`
      create or replace function ${s}.commit_chunk(
        p_run text, p_unit text, p_token bigint, p_worker text, p_from_step integer, p_from_seq integer,
        p_to_step integer, p_to_seq integer, p_cursor jsonb, p_items bigint, p_done boolean, p_key text,
        p_step text, p_lease_ms double precision
      ) returns text language plpgsql as $$
      declare
        v_status text;
        v_witness text;
        v_tail boolean := false;
      begin
        -- The tail (no pending unit left): the run lock first, then the unit, as operator actions take them.
        if p_done and not exists (
          select 1 from ${s}.units where run_id = p_run and status = 'pending' and kind <> 'finalize'
        ) then
          v_tail := true;
          perform 1 from ${s}.runs where run_id = p_run for no key update;
        end if;
        update ${s}.units set
          step_index = p_to_step, cursor = p_cursor, chunk_seq = p_to_seq, attempt = 1,
          crashes_since_progress = 0, chunks = chunks + 1, items = items + p_items, last_error_tag = null,
          status = case when p_done then 'succeeded' else status end,
          lease_owner = case when p_done then null else lease_owner end,
          lease_expires_at = case when p_done then null
            else clock_timestamp() + p_lease_ms * interval '1 millisecond' end,
          finished_at = case when p_done then clock_timestamp() else finished_at end
        where run_id = p_run and unit_id = p_unit and fencing_token = p_token and lease_owner = p_worker
          and lease_expires_at > clock_timestamp() and step_index = p_from_step and chunk_seq = p_from_seq;
        if not found then
          return null;
        end if;
        if p_done and not v_tail then
          -- SKIP LOCKED: taking a witness never waits, so holding the unit's row here makes no cycle.
          select unit_id into v_witness from ${s}.units
          where run_id = p_run and status = 'pending' and kind <> 'finalize' and enqueued_at is null
          limit 1 for share skip locked;
          if v_witness is null then
            select unit_id into v_witness from ${s}.units
            where run_id = p_run and status = 'pending' and kind <> 'finalize'
            limit 1 for share skip locked;
          end if;
          if v_witness is null then
            -- Every pending unit was claimed or locked since the probe above: check under the lock. The
            -- one place the unit's row is held before the run's: an operator action on the run at this
            -- very moment can deadlock with it, and Postgres aborts one of the two (the chunk retries).
            v_tail := true;
            perform 1 from ${s}.runs where run_id = p_run for no key update;
          end if;
        end if;
        insert into ${s}.ledger (run_id, unit_id, idempotency_key, step, chunk_seq, items)
        values (p_run, p_unit, p_key, p_step, p_from_seq, p_items)
        on conflict do nothing;
        if p_done then
          update ${s}.job_slots set run_id = null, unit_id = null, fencing_token = null, expires_at = null
          where run_id = p_run and unit_id = p_unit and fencing_token = p_token;
          if v_tail then
            perform ${s}.try_finalize(p_run);
          end if;
        end if;
        select status into v_status from ${s}.runs where run_id = p_run;
        return v_status;
      end
      $$`
  }),
  "17_commit_with_fused_step": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // commit_chunk as in 16, plus the fused single step's ledger row (p_fused_key, p_fused_step): a chunk
    // and the single step that ran after it in its transaction commit in one call, where there were two
    // (one statement per partition less). A new overload: workers of the version before keep the
    // 14-argument one of migration 16.
    yield* sql`
      create or replace function ${s}.commit_chunk(
        p_run text, p_unit text, p_token bigint, p_worker text, p_from_step integer, p_from_seq integer,
        p_to_step integer, p_to_seq integer, p_cursor jsonb, p_items bigint, p_done boolean, p_key text,
        p_step text, p_lease_ms double precision, p_fused_key text, p_fused_step text
      ) returns text language plpgsql as $$
      declare
        v_status text;
        v_witness text;
        v_tail boolean := false;
      begin
        -- The tail (no pending unit left): the run lock first, then the unit, as operator actions take them.
        if p_done and not exists (
          select 1 from ${s}.units where run_id = p_run and status = 'pending' and kind <> 'finalize'
        ) then
          v_tail := true;
          perform 1 from ${s}.runs where run_id = p_run for no key update;
        end if;
        update ${s}.units set
          step_index = p_to_step, cursor = p_cursor, chunk_seq = p_to_seq, attempt = 1,
          crashes_since_progress = 0, chunks = chunks + case when p_fused_key is null then 1 else 2 end, items = items + p_items, last_error_tag = null,
          status = case when p_done then 'succeeded' else status end,
          lease_owner = case when p_done then null else lease_owner end,
          lease_expires_at = case when p_done then null
            else clock_timestamp() + p_lease_ms * interval '1 millisecond' end,
          finished_at = case when p_done then clock_timestamp() else finished_at end
        where run_id = p_run and unit_id = p_unit and fencing_token = p_token and lease_owner = p_worker
          and lease_expires_at > clock_timestamp() and step_index = p_from_step and chunk_seq = p_from_seq;
        if not found then
          return null;
        end if;
        if p_done and not v_tail then
          -- SKIP LOCKED: taking a witness never waits, so holding the unit's row here makes no cycle.
          select unit_id into v_witness from ${s}.units
          where run_id = p_run and status = 'pending' and kind <> 'finalize' and enqueued_at is null
          limit 1 for share skip locked;
          if v_witness is null then
            select unit_id into v_witness from ${s}.units
            where run_id = p_run and status = 'pending' and kind <> 'finalize'
            limit 1 for share skip locked;
          end if;
          if v_witness is null then
            -- Every pending unit was claimed or locked since the probe above: check under the lock. The
            -- one place the unit's row is held before the run's: an operator action on the run at this
            -- very moment can deadlock with it, and Postgres aborts one of the two (the chunk retries).
            v_tail := true;
            perform 1 from ${s}.runs where run_id = p_run for no key update;
          end if;
        end if;
        insert into ${s}.ledger (run_id, unit_id, idempotency_key, step, chunk_seq, items)
        values (p_run, p_unit, p_key, p_step, p_from_seq, p_items)
        on conflict do nothing;
        if p_fused_key is not null then
          insert into ${s}.ledger (run_id, unit_id, idempotency_key, step, chunk_seq, items)
          values (p_run, p_unit, p_fused_key, p_fused_step, 0, 0)
          on conflict do nothing;
        end if;
        if p_done then
          update ${s}.job_slots set run_id = null, unit_id = null, fencing_token = null, expires_at = null
          where run_id = p_run and unit_id = p_unit and fencing_token = p_token;
          if v_tail then
            perform ${s}.try_finalize(p_run);
          end if;
        end if;
        select status into v_status from ${s}.runs where run_id = p_run;
        return v_status;
      end
      $$`
  }),
  "18_claim_returns_its_row": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // The claim joined claim_unit's row to its run in the calling statement, which Postgres planned on
    // every call (0.11 ms, a third of the claim's time in the billing benchmark) and whose unit and run
    // columns shared names (the unit's status came back as the run's). This function returns the
    // joined row under distinct names, its query planned once per connection.
    yield* sql`
      create or replace function ${s}.claim_unit_row(
        p_run text, p_unit text, p_seq integer, p_worker text, p_lease_ms double precision, p_job text,
        p_slots integer
      ) returns table (
        "runId" text, "unitId" text, job text, kind text, "partitionKey" text, weight double precision,
        status text, "stepIndex" integer, cursor jsonb, "chunkSeq" integer, generation integer,
        attempt integer, "crashesSinceProgress" integer, "fencingToken" text, "leaseOwner" text,
        "leaseExpiresAt" double precision, "enqueueSeq" integer, "enqueuedAt" double precision,
        "retryAt" double precision, chunks text, items text, "startedAt" double precision,
        "finishedAt" double precision, "lastErrorTag" text, "parentUnitId" text, range jsonb,
        "run.runId" text, "run.job" text, "run.runKey" text, "run.params" jsonb, "run.definition" jsonb, "run.fingerprint" text,
        "run.status" text, "run.partitionCount" integer, "run.failureBudget" text, "run.finalizeSeq" integer,
        "run.createdAt" double precision, "run.updatedAt" double precision, "run.finishedAt" double precision,
        "run.reason" text
      ) language plpgsql rows 1 as $$
      #variable_conflict use_column
      begin
        return query
        select u.run_id, u.unit_id, u.job, u.kind, u.partition_key, u.weight, u.status, u.step_index, u.cursor,
          u.chunk_seq, u.generation, u.attempt, u.crashes_since_progress, u.fencing_token::text, u.lease_owner,
          (extract(epoch from u.lease_expires_at) * 1000)::float8, u.enqueue_seq,
          (extract(epoch from u.enqueued_at) * 1000)::float8, (extract(epoch from u.retry_at) * 1000)::float8,
          u.chunks::text, u.items::text, (extract(epoch from u.started_at) * 1000)::float8,
          (extract(epoch from u.finished_at) * 1000)::float8, u.last_error_tag, u.parent_unit_id, u.range,
          r.run_id, r.job, r.run_key, r.params, r.definition, r.fingerprint, r.status, r.partition_count, r.failure_budget::text,
          r.finalize_seq, (extract(epoch from r.created_at) * 1000)::float8,
          (extract(epoch from r.updated_at) * 1000)::float8, (extract(epoch from r.finished_at) * 1000)::float8,
          r.reason
        from ${s}.claim_unit(p_run, p_unit, p_seq, p_worker, p_lease_ms, p_job, p_slots) u
        join ${s}.runs r on r.run_id = u.run_id;
      end
      $$`
  }),
  "19_fused_commit_only_while_running": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // A fused step runs before its commit, on the run status the worker last saw; the run may have
    // stopped since (D8: a stopped run starts no new step). The fused commit goes through this function,
    // which refuses it (nothing recorded) unless the run is running, and otherwise is commit_chunk of 17.
    // It returns 'refused:' and the run's status when it refuses.
    yield* sql`
      create function ${s}.commit_fused(
        p_run text, p_unit text, p_token bigint, p_worker text, p_from_step integer, p_from_seq integer,
        p_to_step integer, p_to_seq integer, p_cursor jsonb, p_items bigint, p_done boolean, p_key text,
        p_step text, p_lease_ms double precision, p_fused_key text, p_fused_step text
      ) returns text language plpgsql as $$
      declare
        v_status text;
      begin
        select status into v_status from ${s}.runs where run_id = p_run;
        if v_status is distinct from 'running' then
          return 'refused:' || coalesce(v_status, 'missing');
        end if;
        return ${s}.commit_chunk(p_run, p_unit, p_token, p_worker, p_from_step, p_from_seq, p_to_step, p_to_seq,
          p_cursor, p_items, p_done, p_key, p_step, p_lease_ms, p_fused_key, p_fused_step);
      end
      $$`
  }),
  "20_failing_run_cancels_what_waits": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // try_finalize as in 11, plus: in a failing run, units still pending are cancelled first, under the
    // run lock. The failure that moved the run to failing cancelled those it saw, but a unit can turn
    // pending afterwards (released by a draining worker, a retry put off, a split partition joined), and
    // nothing claims a unit of a run that is not running: the run would never finalize.
    yield* sql`
      create or replace function ${s}.try_finalize(p_run text) returns text language plpgsql as $$
      declare
        v_unit text;
      begin
        perform 1 from ${s}.runs where run_id = p_run for no key update;
        update ${s}.units set status = 'cancelled', fencing_token = fencing_token + 1, lease_owner = null,
          lease_expires_at = null, finished_at = clock_timestamp()
        where run_id = p_run and status = 'pending' and kind <> 'finalize'
          and exists (select 1 from ${s}.runs where run_id = p_run and status = 'failing');
        with r as (
          update ${s}.runs set status = 'finalizing', updated_at = clock_timestamp()
          where run_id = p_run and status in ('running', 'failing')
            and not exists (
              select 1 from ${s}.units
              where run_id = p_run and status in ('pending', 'leased') and kind <> 'finalize')
            and not exists (
              select 1 from ${s}.units where run_id = p_run and status = 'waiting' and kind <> 'finalize')
          returning run_id, job, finalize_seq)
        insert into ${s}.units (run_id, unit_id, job, kind, partition_key, weight)
        select run_id, 'finalize-' || finalize_seq, job, 'finalize', '', 0 from r
        on conflict do nothing
        returning unit_id into v_unit;
        return v_unit;
      end
      $$`
  }),
  "21_queue_receipt_per_delivery": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // queue_receive as in 5, with a receipt unique per delivery: it was the message id and its receive
    // count, which a redrive starts again, so a holder's receipt from before the redrive acked, released
    // or extended the message's next delivery.
    yield* sql`create sequence ${s}.queue_deliveries`
    yield* sql`
      create or replace function ${s}.queue_receive(p_queue text, p_max integer, p_visibility_ms double precision,
        p_max_receives integer)
      returns table (id bigint, body text, receive_count integer, receipt text) language plpgsql as $$
      #variable_conflict use_column
      begin
        return query
        with picked as (
          select q.id, q.receive_count from ${s}.queue_messages q
          where q.queue = p_queue and q.visible_at <= clock_timestamp()
          order by q.visible_at, q.id
          limit p_max
          for update skip locked),
        dead as (
          delete from ${s}.queue_messages m using picked
          where m.id = picked.id and picked.receive_count >= p_max_receives
          returning m.id, m.queue, m.body, m.receive_count),
        buried as (
          insert into ${s}.queue_dead (id, queue, body, reason, receive_count)
          select d.id, d.queue, d.body,
            'received ' || d.receive_count || ' times without being acknowledged (maxReceives ' || p_max_receives || ')',
            d.receive_count
          from dead d
          on conflict (id) do nothing)
        update ${s}.queue_messages m set
          receive_count = m.receive_count + 1,
          visible_at = clock_timestamp() + p_visibility_ms * interval '1 millisecond',
          receipt = m.id || ':' || nextval('${s}.queue_deliveries')
        from picked
        where m.id = picked.id and picked.receive_count < p_max_receives
        returning m.id, m.body, m.receive_count, m.receipt;
      end
      $$`
  }),
  "22_claim_by_id": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // A claim whose reply was lost (the connection dropped after the database committed it) left a
    // lease its worker never used; when it expired the next claim counted a crash, so a few lost
    // replies failed a healthy unit as CrashLoop. A claim now names itself: the unit keeps the id of
    // the claim that leased it, a claim repeated with the same id by the same worker gets that lease
    // back (extended) instead of "leased elsewhere", and after the lease expired takes it again
    // without counting a crash. claim_unit as in 15 otherwise, but it looks for a free job slot before
    // locking the unit and takes one (SKIP LOCKED, never waited for) only for a unit it will claim, so
    // a claim refused by the cap writes nothing. The 7-argument functions stay for workers of the
    // version before.
    yield* sql`alter table ${s}.units add column claim_id text`
    yield* sql`
      create function ${s}.claim_unit(
        p_run text, p_unit text, p_seq integer, p_worker text, p_lease_ms double precision, p_job text,
        p_slots integer, p_claim text
      ) returns setof ${s}.units language plpgsql rows 1 as $$
      declare
        v_slot integer;
        v_unit ${s}.units;
        v_run_status text;
        v_until timestamptz;
      begin
        select * into v_unit from ${s}.units where run_id = p_run and unit_id = p_unit;
        if not found then
          return;
        end if;
        -- A job at its cap claims nothing: looked at before any lock (a slot is taken for real below),
        -- except by a repeat, whose lease holds its slot.
        if p_slots is not null
          and (v_unit.claim_id = p_claim and v_unit.lease_owner = p_worker) is not true
          and not exists (
            select 1 from ${s}.job_slots
            where job = p_job and slot <= p_slots and (unit_id is null or expires_at <= clock_timestamp())) then
          return;
        end if;
        -- Locked, and read again: a repeat may have waited here for its own claim, still in flight.
        select * into v_unit from ${s}.units where run_id = p_run and unit_id = p_unit for no key update;
        select status into v_run_status from ${s}.runs where run_id = p_run;
        -- The same claim again: its lease back, extended with its job slot, while both are live.
        if (v_unit.status = 'leased' and v_unit.claim_id = p_claim and v_unit.lease_owner = p_worker
            and v_unit.lease_expires_at > clock_timestamp()
            and v_run_status = case when v_unit.kind = 'finalize' then 'finalizing' else 'running' end) is true then
          v_until := clock_timestamp() + p_lease_ms * interval '1 millisecond';
          if p_slots is not null then
            update ${s}.job_slots set expires_at = v_until
            where run_id = p_run and unit_id = p_unit and fencing_token = v_unit.fencing_token
              and expires_at > clock_timestamp();
            if not found then
              return; -- its slot lapsed and may be another unit's now: no longer this claim's lease
            end if;
          end if;
          update ${s}.units u set lease_expires_at = v_until
          where u.run_id = p_run and u.unit_id = p_unit
          returning u.* into v_unit;
          return next v_unit;
          return;
        end if;
        if (v_unit.enqueue_seq <= p_seq
            and case when v_unit.kind = 'finalize' then v_run_status = 'finalizing' else v_run_status = 'running' end
            and (v_unit.status = 'pending'
              or (v_unit.status = 'leased' and v_unit.lease_expires_at <= clock_timestamp()))
            and (v_unit.retry_at is null or v_unit.retry_at <= clock_timestamp() or v_unit.status = 'leased'))
          is not true then
          return;
        end if;
        if p_slots is not null then
          select slot into v_slot from ${s}.job_slots
          where job = p_job and slot <= p_slots and (unit_id is null or expires_at <= clock_timestamp())
          order by slot limit 1
          for update skip locked;
          if v_slot is null then
            return;
          end if;
        end if;
        -- An expired lease is a crash, unless this same claim took it and never came back.
        update ${s}.units u set
          status = 'leased',
          fencing_token = u.fencing_token + 1,
          lease_owner = p_worker,
          claim_id = p_claim,
          enqueued_at = coalesce(u.enqueued_at, clock_timestamp()),
          lease_expires_at = clock_timestamp() + p_lease_ms * interval '1 millisecond',
          retry_at = null,
          started_at = coalesce(u.started_at, clock_timestamp()),
          crashes_since_progress = u.crashes_since_progress + case
            when u.status = 'leased' and (u.claim_id = p_claim and u.lease_owner = p_worker) is not true then 1 else 0 end,
          attempt = u.attempt + case
            when u.status = 'leased' and (u.claim_id = p_claim and u.lease_owner = p_worker) is not true then 1 else 0 end
        where u.run_id = p_run and u.unit_id = p_unit
        returning u.* into v_unit;
        if v_slot is not null then
          update ${s}.job_slots set run_id = v_unit.run_id, unit_id = v_unit.unit_id,
            fencing_token = v_unit.fencing_token, expires_at = v_unit.lease_expires_at
          where job = p_job and slot = v_slot;
        end if;
        return next v_unit;
      end
      $$`
    // A worker of the version before claims through the 7-argument function: now this one without an
    // id, so its claim clears the unit's claim id (a repeat must never find a lease taken since) and
    // takes the locks in the same order.
    yield* sql`
      create or replace function ${s}.claim_unit(
        p_run text, p_unit text, p_seq integer, p_worker text, p_lease_ms double precision, p_job text,
        p_slots integer
      ) returns setof ${s}.units language plpgsql rows 1 as $$
      begin
        return query select * from ${s}.claim_unit(p_run, p_unit, p_seq, p_worker, p_lease_ms, p_job, p_slots, null::text);
      end
      $$`
    // claim_unit_row as in 18, for the claim that names itself.
    yield* sql`
      create function ${s}.claim_unit_row(
        p_run text, p_unit text, p_seq integer, p_worker text, p_lease_ms double precision, p_job text,
        p_slots integer, p_claim text
      ) returns table (
        "runId" text, "unitId" text, job text, kind text, "partitionKey" text, weight double precision,
        status text, "stepIndex" integer, cursor jsonb, "chunkSeq" integer, generation integer,
        attempt integer, "crashesSinceProgress" integer, "fencingToken" text, "leaseOwner" text,
        "leaseExpiresAt" double precision, "enqueueSeq" integer, "enqueuedAt" double precision,
        "retryAt" double precision, chunks text, items text, "startedAt" double precision,
        "finishedAt" double precision, "lastErrorTag" text, "parentUnitId" text, range jsonb,
        "run.runId" text, "run.job" text, "run.runKey" text, "run.params" jsonb, "run.definition" jsonb, "run.fingerprint" text,
        "run.status" text, "run.partitionCount" integer, "run.failureBudget" text, "run.finalizeSeq" integer,
        "run.createdAt" double precision, "run.updatedAt" double precision, "run.finishedAt" double precision,
        "run.reason" text
      ) language plpgsql rows 1 as $$
      #variable_conflict use_column
      begin
        return query
        select u.run_id, u.unit_id, u.job, u.kind, u.partition_key, u.weight, u.status, u.step_index, u.cursor,
          u.chunk_seq, u.generation, u.attempt, u.crashes_since_progress, u.fencing_token::text, u.lease_owner,
          (extract(epoch from u.lease_expires_at) * 1000)::float8, u.enqueue_seq,
          (extract(epoch from u.enqueued_at) * 1000)::float8, (extract(epoch from u.retry_at) * 1000)::float8,
          u.chunks::text, u.items::text, (extract(epoch from u.started_at) * 1000)::float8,
          (extract(epoch from u.finished_at) * 1000)::float8, u.last_error_tag, u.parent_unit_id, u.range,
          r.run_id, r.job, r.run_key, r.params, r.definition, r.fingerprint, r.status, r.partition_count, r.failure_budget::text,
          r.finalize_seq, (extract(epoch from r.created_at) * 1000)::float8,
          (extract(epoch from r.updated_at) * 1000)::float8, (extract(epoch from r.finished_at) * 1000)::float8,
          r.reason
        from ${s}.claim_unit(p_run, p_unit, p_seq, p_worker, p_lease_ms, p_job, p_slots, p_claim) u
        join ${s}.runs r on r.run_id = u.run_id;
      end
      $$`
  }),
  "23_run_base_key": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // The run key without its rerun label, so that createRun can refuse a second live run of the same
    // params. Runs of the versions before get it from their key: the part before "#rerun:".
    yield* sql`alter table ${s}.runs add column base_key text`
    yield* sql`update ${s}.runs set base_key = split_part(run_key, '#rerun:', 1)`
    yield* sql`
      create index runs_live_base_key on ${s}.runs (job, base_key)
      where status not in ('succeeded', 'failed', 'cancelled')`
  }),
  "24_commit_that_ends_its_transaction": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    // A chunk's commit sent in one round trip with the transaction's COMMIT (see internal/pgPipeline):
    // commit_chunk (or commit_fused, with a fused step) that raises where they return a refusal, so the
    // COMMIT behind it in the same pipeline finds the transaction aborted and nothing of the chunk commits.
    // SQLSTATE CW001: the compare-and-set matched no row (fenced, expired or moved: the caller reads why);
    // CW002: the run stopped before a fused step's commit, the run's status in the message.
    yield* sql`
      create function ${s}.commit_chunk_last(
        p_run text, p_unit text, p_token bigint, p_worker text, p_from_step integer, p_from_seq integer,
        p_to_step integer, p_to_seq integer, p_cursor jsonb, p_items bigint, p_done boolean, p_key text,
        p_step text, p_lease_ms double precision, p_fused_key text, p_fused_step text
      ) returns text language plpgsql as $$
      declare
        v_status text;
      begin
        if p_fused_key is null then
          v_status := ${s}.commit_chunk(p_run, p_unit, p_token, p_worker, p_from_step, p_from_seq, p_to_step,
            p_to_seq, p_cursor, p_items, p_done, p_key, p_step, p_lease_ms, null, null);
        else
          v_status := ${s}.commit_fused(p_run, p_unit, p_token, p_worker, p_from_step, p_from_seq, p_to_step,
            p_to_seq, p_cursor, p_items, p_done, p_key, p_step, p_lease_ms, p_fused_key, p_fused_step);
        end if;
        if v_status is null then
          raise exception 'chunkwise: the chunk''s checkpoint did not move' using errcode = 'CW001';
        end if;
        if v_status like 'refused:%' then
          raise exception '%', substr(v_status, 9) using errcode = 'CW002';
        end if;
        return v_status;
      end
      $$`
  })
})
