"""The floor the booking API is measured against: the same stack (uvicorn, FastAPI, pydantic,
SQLAlchemy async and the same driver and SQLite settings) doing the least a booking endpoint can
do: validate a body and INSERT one comparable row in one transaction.

    BARE_DATABASE_URL=sqlite:///var/bare.sqlite3 uvicorn bench.bare_app:app --port 8099
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, Uuid, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from clinicsync.db.engine import create_engine

metadata = MetaData()
bookings = Table(
    "bare_bookings",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("patient_id", Uuid, nullable=False),
    Column("practitioner_id", Uuid, nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("status", String(20), nullable=False),
    Column("booking_source", String(20), nullable=False),
    Column("booking_reference", String(16), nullable=False),
    Column("notes", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class BookingBody(BaseModel):
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    start: AwareDatetime
    end: AwareDatetime | None = None
    booking_source: str = Field(default="api", max_length=20)
    notes: str = Field(default="", max_length=5000)


# Made when the app starts, so that importing this module (for its table) needs no database.
engine: AsyncEngine


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global engine
    engine = create_engine(os.environ["BARE_DATABASE_URL"])
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.post("/bookings", status_code=201)
async def book(body: BookingBody) -> JSONResponse:
    row_id = uuid.uuid4()
    start = body.start.astimezone(UTC)
    end = body.end.astimezone(UTC) if body.end else start + timedelta(minutes=30)
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(
            insert(bookings).values(
                id=row_id,
                patient_id=body.patient_id,
                practitioner_id=body.practitioner_id,
                starts_at=start.replace(tzinfo=None) if engine.dialect.name == "sqlite" else start,
                ends_at=end.replace(tzinfo=None) if engine.dialect.name == "sqlite" else end,
                status="pending",
                booking_source=body.booking_source,
                booking_reference=row_id.hex[:10].upper(),
                notes=body.notes,
                version=1,
                created_at=now.replace(tzinfo=None) if engine.dialect.name == "sqlite" else now,
            )
        )
    return JSONResponse(
        {"id": str(row_id), "start": start.isoformat(), "end": end.isoformat()}, status_code=201
    )


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
