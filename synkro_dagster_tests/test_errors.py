"""The exception tree: one root, a user-facing branch and a transient branch, decided by class."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import synkro_dagster
from synkro_dagster.errors import SynkroError, TransientError, UserError, is_transient


def _synkro_exception_classes() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(synkro_dagster.__path__, "synkro_dagster."):
        if ".demo" in info.name:
            continue  # the demo servers are not the product
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and not obj.__name__.startswith("_")
            ):
                found.append(obj)
    return found


def test_every_exception_synkro_defines_has_the_one_root() -> None:
    classes = _synkro_exception_classes()
    assert len(classes) >= 10
    import dagster as dg

    # dg.Failure subclasses are how a run fails in Dagster; they carry their own metadata.
    strays = [c for c in classes if not issubclass(c, SynkroError | dg.Failure)]
    assert strays == []


def test_the_old_builtin_bases_still_catch_them() -> None:
    from synkro_dagster.integrations.registry import IntegrationError, IntegrationNotFound
    from synkro_dagster.specs.loader import SpecError

    assert issubclass(SpecError, ValueError) and issubclass(SpecError, UserError)
    assert issubclass(IntegrationNotFound, LookupError) and issubclass(
        IntegrationNotFound, UserError
    )
    assert issubclass(IntegrationError, ValueError)


def test_an_unreachable_source_is_transient_and_a_refused_redirect_is_not() -> None:
    from synkro_dagster.connectors.http import RedirectRefusedError, SourceUnreachableError

    assert is_transient(SourceUnreachableError("host refused 3 connections"))
    assert not is_transient(RedirectRefusedError("redirect to another origin"))
    wrapped = RuntimeError("stream failed")
    wrapped.__cause__ = SourceUnreachableError("down")
    assert is_transient(wrapped)
    assert not is_transient(ValueError("a bug"))


def test_a_real_lock_timeout_is_transient(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("create table locked (id int)")
    holder = engine.connect()
    try:
        holder.exec_driver_sql("begin; lock table locked in access exclusive mode")
        with engine.connect() as waiter, pytest.raises(sa.exc.OperationalError) as raised:
            waiter.exec_driver_sql("set lock_timeout = '100ms'")
            waiter.exec_driver_sql("select * from locked")
    finally:
        holder.rollback()
        holder.close()
    assert raised.value.orig.sqlstate == "55P03"
    assert is_transient(raised.value)


def test_a_real_serialization_failure_is_transient(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("create table counter (n int)")
        conn.exec_driver_sql("insert into counter values (0)")
    first, second = engine.connect(), engine.connect()
    try:
        for conn in (first, second):
            conn.exec_driver_sql("set transaction isolation level serializable")
            conn.exec_driver_sql("select n from counter").all()
        first.exec_driver_sql("update counter set n = n + 1")
        first.commit()
        with pytest.raises(sa.exc.OperationalError) as raised:
            second.exec_driver_sql("update counter set n = n + 1")
    finally:
        second.rollback()
        first.close()
        second.close()
    assert raised.value.orig.sqlstate == "40001"
    assert is_transient(raised.value)


def test_a_data_error_is_not_transient(engine: sa.Engine) -> None:
    with engine.connect() as conn, pytest.raises(sa.exc.DataError) as raised:
        conn.exec_driver_sql("select 'x'::int")
    assert not is_transient(raised.value)


def test_the_cli_prints_any_user_error_as_one_line_without_a_traceback() -> None:
    from synkro_dagster.cli import main

    @main.command("explode-for-test", hidden=True)
    def explode() -> None:
        raise TransientError("not a user error")

    @main.command("refuse-for-test", hidden=True)
    def refuse() -> None:
        raise UserError("integration 'x' is broken; fix it with `synkro integrations edit x`")

    try:
        refused = CliRunner().invoke(main, ["refuse-for-test"])
        assert refused.exit_code == 1
        assert refused.output.strip() == (
            "Error: integration 'x' is broken; fix it with `synkro integrations edit x`"
        )
        crashed = CliRunner().invoke(main, ["explode-for-test"])
        assert isinstance(crashed.exception, TransientError)  # not a user message: the traceback
    finally:
        main.commands.pop("explode-for-test", None)
        main.commands.pop("refuse-for-test", None)
