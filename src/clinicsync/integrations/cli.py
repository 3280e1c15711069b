"""`clinicsync providers ...`: validate, load and draft provider definitions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from clinicsync.config import get_settings
from clinicsync.db import migrate
from clinicsync.db.engine import create_engine, create_sessionmaker, session_scope
from clinicsync.integrations import service
from clinicsync.integrations.credentials import rotate_key
from clinicsync.integrations.definitions import DefinitionError, load_definition_file
from clinicsync.integrations.openapi_import import OpenAPIImportError, draft_definition

app = typer.Typer(help="Provider definitions: validate, load into the catalogue, import from OpenAPI.")
# Lines are never wrapped: each error line must stay "file: path: message" for grep and CI logs.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="definition YAML files")]) -> None:
    """Check definition files; every problem is printed with the file, path and field."""
    failed = False
    for path in files:
        try:
            definition = load_definition_file(path)
        except DefinitionError as exc:
            failed = True
            for line in str(exc).splitlines():
                errors.print(line, markup=False, highlight=False)
            continue
        console.print(f"{path}: ok ({definition.key}, {len(definition.functions)} functions)", markup=False)
    if failed:
        raise typer.Exit(code=1)


async def _sync() -> dict[str, str]:
    settings = get_settings()
    engine = create_engine(settings.database_url)
    try:
        if settings.migrate_on_start:
            await migrate.upgrade(engine)
        async with session_scope(create_sessionmaker(engine)) as session:
            return await service.sync_catalogue(session)
    finally:
        await engine.dispose()


@app.command()
def sync() -> None:
    """Load the shipped provider definitions into the catalogue."""
    try:
        outcome = asyncio.run(_sync())
    except DefinitionError as exc:
        errors.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(code=1) from None
    table = Table("provider", "catalogue")
    for key, result in sorted(outcome.items()):
        table.add_row(key, result)
    console.print(table)


@app.command("import-openapi")
def import_openapi(
    spec: Annotated[Path, typer.Argument(help="an OpenAPI 3 document (JSON or YAML)")],
    key: Annotated[str, typer.Option("--key", help="provider key for the draft")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here instead of stdout")
    ] = None,
) -> None:
    """Turn an OpenAPI 3 document into a draft definition for a person to finish."""
    try:
        document = yaml.safe_load(spec.read_text(encoding="utf-8"))
        draft = draft_definition(document, key)
    except OSError as exc:
        errors.print(f"{spec}: cannot read: {exc.strerror}", markup=False)
        raise typer.Exit(code=1) from None
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        errors.print(f"{spec}: not JSON or YAML: {exc}", markup=False)
        raise typer.Exit(code=1) from None
    except OpenAPIImportError as exc:
        errors.print(f"{spec}: {exc}", markup=False)
        raise typer.Exit(code=1) from None
    text = yaml.safe_dump(draft, sort_keys=False, allow_unicode=True)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"draft written to {output} ({len(draft['functions'])} functions)", markup=False)


async def _rotate() -> int:
    settings = get_settings()
    engine = create_engine(settings.database_url)
    try:
        return await rotate_key(create_sessionmaker(engine), settings)
    finally:
        await engine.dispose()


def rotate_key_command() -> None:
    """Re-encrypt every stored credential under a new key."""
    count = asyncio.run(_rotate())
    console.print(f"re-encrypted {count} credentials under the new key", markup=False)


app.command("rotate-key")(rotate_key_command)
