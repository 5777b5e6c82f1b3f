"""The example worker: the same code runs against local state or a remote env.

Run it under the daemon with `make run`, or by hand:
    bindingd run --config examples/shop/bindingd.yaml -- python examples/shop/worker.py
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from bindingd_client import SqlError, connect

MIGRATIONS = Path(__file__).parent / "migrations" / "APP_DB"


async def main() -> None:
    async with await connect() as env:
        print(f"connected to env {env._env_name!r}: {', '.join(sorted(env._bindings))}")
        print(f"SITE_NAME = {env.SITE_NAME!r}; API_KEY is set ({len(env.API_KEY)} characters, not printed)")

        # A cart in KV with metadata and a TTL, read back as JSON.
        await env.CACHE.put("cart:alice", '{"items": ["mug", "tea"]}', expiration_ttl=3600, metadata={"v": 2})
        cart = await env.CACHE.get_with_metadata("cart:alice", type="json")
        print(f"cart:alice -> {cart.value} (metadata {cart.metadata})")

        # A visit counter that survives restarts: state lives in .bindingd/state.
        visits = int(await env.CACHE.get("visits") or 0) + 1
        await env.CACHE.put("visits", str(visits))
        print(f"visits -> {visits} (run `make run` again and it grows)")

        # Many products, then list them page by page with the cursor.
        await asyncio.gather(*(env.CACHE.put(f"product:{i:03}", f"Product {i}") for i in range(25)))
        pages, cursor, names = 0, None, []
        while True:
            page = await env.CACHE.list(prefix="product:", limit=10, cursor=cursor)
            pages += 1
            names += [k.name for k in page.keys]
            if page.list_complete:
                break
            cursor = page.cursor
        print(f"listed {len(names)} products in {pages} pages: {names[0]} .. {names[-1]}")

        # Bulk get: several keys in one call, None for the missing one.
        bulk = await env.CACHE.get(["product:000", "product:024", "product:999"])
        print(f"bulk get -> {bulk}")

        # An R2-style bucket: put with metadata, read a range back, list by "folder".
        logo = await env.ASSETS_BUCKET.put(
            "img/logo.svg", "<svg>shop</svg>", http_metadata={"content_type": "image/svg+xml"}
        )
        part = await env.ASSETS_BUCKET.get("img/logo.svg", range={"offset": 1, "length": 3})
        folders = await env.ASSETS_BUCKET.list(delimiter="/")
        print(
            f"img/logo.svg etag {logo.etag}, bytes 1-3 {await part.text()!r}, "
            f"folders {folders.delimited_prefixes}"
        )

        await env.SESSIONS.put("session:alice", "token-abc", expiration_ttl=60)
        await env.SESSIONS.delete("session:alice")
        print(f"session:alice after delete -> {await env.SESSIONS.get('session:alice')}")

        # SQL with D1's API: the schema from the migration, then statements with bound values.
        db = env.APP_DB
        for migration in sorted(MIGRATIONS.glob("*.sql")):
            await db.exec(migration.read_text())
        insert = db.prepare("INSERT INTO orders (customer, item, qty) VALUES (?, ?, ?)")
        placed = await insert.bind("alice", "mug", 2).run()
        print(f"order {placed.meta['last_row_id']} placed ({placed.meta['changes']} row written)")
        # A batch is one transaction: the bad third statement undoes the first two.
        try:
            await db.batch(
                [insert.bind("bob", "tea", 1), insert.bind("bob", "pot", 1), insert.bind("bob", "cup", 0)]
            )
        except SqlError as e:
            print(f"batch refused, nothing written: {e}")
        totals = await db.prepare(
            "SELECT customer, count(*) AS orders, sum(qty) AS items FROM orders GROUP BY customer"
        ).all()
        print(f"orders by customer -> {totals.results}")
        by_customer = db.prepare("SELECT item FROM orders WHERE customer = ?")
        print(f"alice's first item -> {await by_customer.bind('alice').first('item')}")
        # Orders through the JOBS queue: a producer sends, a consumer acks what it handled.
        await env.JOBS.send({"order": 1, "item": "mug"})
        await env.JOBS.send_batch([{"body": {"order": n, "item": "tea"}} for n in range(2, 5)])
        handled = []
        async with contextlib.aclosing(env.JOBS.consume(batch_size=10, max_wait=0.5)) as batches:
            async for batch in batches:
                for message in batch.messages:
                    handled.append(message.body["order"])
                    await message.ack()
                if len(handled) >= 4:
                    break
        print(f"JOBS: handled orders {sorted(handled)} (attempts 1 each, acked)")


if __name__ == "__main__":
    asyncio.run(main())
