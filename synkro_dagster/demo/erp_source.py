"""The demo's legacy ERP: creates, seeds and mutates a scratch SQL database the `erp` spec reads.

Works on SQLite (a fresh machine), PostgreSQL and MariaDB/MySQL: the tables are declared with
SQLAlchemy Core, so each backend gets its own DDL.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("email", sa.String(200)),
    sa.Column("country", sa.String(2)),
    sa.Column("credit_limit", sa.Numeric(12, 2)),
    sa.Column("is_active", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
)

invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("number", sa.String(20), nullable=False),
    sa.Column("issued_on", sa.Date, nullable=False),
    sa.Column("status", sa.String(10), nullable=False),  # open | paid | void
    sa.Column("total", sa.Numeric(12, 2), nullable=False),
    sa.Column("modified_at", sa.DateTime, nullable=False, index=True),
)

# No change-tracking column: the spec reads it whole each time (write_mode replace).
invoice_lines = sa.Table(
    "invoice_lines",
    metadata,
    sa.Column("invoice_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("line_no", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sku", sa.String(20), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price", sa.Numeric(12, 2), nullable=False),
)

BASE_TIME = dt.datetime(2026, 1, 1, 8, 0, 0)
COUNTRIES = ["DE", "FR", "PL", "KZ", "AM", "US", "GB", "NL"]
STATUSES = ["open", "paid", "paid", "paid", "void"]


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url)


def create_demo_erp(url: str, rows: int = 200, seed: int = 7) -> dict[str, int]:
    """(Re)create the ERP tables in the database at `url` and seed them.

    `rows` customers, about two invoices per customer and two to three lines per invoice; the
    data is the same for the same `seed`. Returns the row count of each table.
    """
    rng = random.Random(seed)
    engine = _engine(url)
    try:
        metadata.drop_all(engine)
        metadata.create_all(engine)
        customer_rows: list[dict[str, Any]] = []
        invoice_rows: list[dict[str, Any]] = []
        line_rows: list[dict[str, Any]] = []
        for i in range(1, rows + 1):
            customer_rows.append(
                {
                    "id": i,
                    "name": f"Customer {i:05d}",
                    "email": f"billing{i}@customer{i}.example",
                    "country": rng.choice(COUNTRIES),
                    "credit_limit": Decimal(rng.randrange(10, 500) * 100),
                    "is_active": rng.random() > 0.1,
                    "updated_at": BASE_TIME + dt.timedelta(minutes=i),
                }
            )
        invoice_id = 0
        for customer in customer_rows:
            for _ in range(rng.randint(1, 3)):
                invoice_id += 1
                total = Decimal(0)
                for line_no in range(1, rng.randint(2, 3) + 1):
                    quantity = rng.randint(1, 20)
                    price = Decimal(rng.randrange(100, 100_000)) / 100
                    total += quantity * price
                    line_rows.append(
                        {
                            "invoice_id": invoice_id,
                            "line_no": line_no,
                            "sku": f"SKU-{rng.randrange(1, 500):04d}",
                            "quantity": quantity,
                            "unit_price": price,
                        }
                    )
                invoice_rows.append(
                    {
                        "id": invoice_id,
                        "customer_id": customer["id"],
                        "number": f"INV-{invoice_id:06d}",
                        "issued_on": (BASE_TIME + dt.timedelta(days=invoice_id % 90)).date(),
                        "status": rng.choice(STATUSES),
                        "total": total.quantize(Decimal("0.01")),
                        "modified_at": BASE_TIME + dt.timedelta(minutes=invoice_id),
                    }
                )
        with engine.begin() as conn:
            for table, data in (
                (customers, customer_rows),
                (invoices, invoice_rows),
                (invoice_lines, line_rows),
            ):
                for start in range(0, len(data), 5000):
                    conn.execute(table.insert(), data[start : start + 5000])
        return {
            "customers": len(customer_rows),
            "invoices": len(invoice_rows),
            "invoice_lines": len(line_rows),
        }
    finally:
        engine.dispose()


def touch_demo_erp(url: str, now: dt.datetime | None = None) -> dict[str, list[int]]:
    """Change the ERP the way a working day does, so the next sync has something incremental.

    Adds two customers and updates one; adds an invoice (with lines) and marks one open invoice
    paid. Changed rows get `now` (default: later than every existing timestamp) as their change
    time. Returns the ids touched per table.
    """
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            last_customer = conn.execute(sa.select(sa.func.max(customers.c.updated_at))).scalar()
            last_invoice = conn.execute(sa.select(sa.func.max(invoices.c.modified_at))).scalar()
            latest = max(t for t in (last_customer, last_invoice, BASE_TIME) if t is not None)
            stamp = now or (latest + dt.timedelta(minutes=1)).replace(microsecond=0)
            max_customer = conn.execute(sa.select(sa.func.max(customers.c.id))).scalar() or 0
            max_invoice = conn.execute(sa.select(sa.func.max(invoices.c.id))).scalar() or 0
            new_customers = [max_customer + 1, max_customer + 2]
            conn.execute(
                customers.insert(),
                [
                    {
                        "id": cid,
                        "name": f"Customer {cid:05d}",
                        "email": f"billing{cid}@customer{cid}.example",
                        "country": "DE",
                        "credit_limit": Decimal("2500.00"),
                        "is_active": True,
                        "updated_at": stamp,
                    }
                    for cid in new_customers
                ],
            )
            updated_customer = 1
            conn.execute(
                customers.update()
                .where(customers.c.id == updated_customer)
                .values(name="Customer 00001 (renamed)", updated_at=stamp)
            )
            new_invoice = max_invoice + 1
            conn.execute(
                invoices.insert(),
                {
                    "id": new_invoice,
                    "customer_id": new_customers[0],
                    "number": f"INV-{new_invoice:06d}",
                    "issued_on": stamp.date(),
                    "status": "open",
                    "total": Decimal("150.00"),
                    "modified_at": stamp,
                },
            )
            conn.execute(
                invoice_lines.insert(),
                [
                    {
                        "invoice_id": new_invoice,
                        "line_no": 1,
                        "sku": "SKU-0001",
                        "quantity": 3,
                        "unit_price": Decimal("50.00"),
                    }
                ],
            )
            paid = conn.execute(
                sa.select(sa.func.min(invoices.c.id)).where(invoices.c.status == "open")
            ).scalar()
            touched_invoices = [new_invoice]
            if paid is not None:
                conn.execute(
                    invoices.update()
                    .where(invoices.c.id == paid)
                    .values(status="paid", modified_at=stamp)
                )
                touched_invoices.insert(0, paid)
        return {
            "customers": [updated_customer, *new_customers],
            "invoices": touched_invoices,
            "invoice_lines": [new_invoice],
        }
    finally:
        engine.dispose()
