-- Migration number: 0001 	 2026-11-27
-- `bindingd migrations apply APP_DB --config examples/shop/bindingd.yaml` applies it once and
-- records it; the example worker also runs it with exec(), so it is written to be re-runnable.
CREATE TABLE IF NOT EXISTS orders (
    id       INTEGER PRIMARY KEY,
    customer TEXT NOT NULL,
    item     TEXT NOT NULL,
    qty      INTEGER NOT NULL CHECK (qty > 0)
);
