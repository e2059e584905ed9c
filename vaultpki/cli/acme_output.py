"""What the CLI says about an ACME ``ui.crt``: what a dry run would order, what an order brought, where the
current one came from (``status``)."""

from __future__ import annotations

from collections.abc import Sequence

from vaultpki.acme.console import UiOrigin
from vaultpki.config.records import AcmeConfig

__all__ = ["acme_dry_run_line", "acme_issued_line", "acme_origin_lines"]


def acme_dry_run_line(acme: AcmeConfig, hosts: Sequence[str]) -> str:
    return (f"would order ui.crt ({', '.join(hosts)}) from the ACME CA at {acme.directory}, answering "
            f"{acme.responder_text()}; ca-ui.crt: the root it chains to in "
            f"{acme.trust or 'the system CA bundle'}")


def acme_issued_line(origin: UiOrigin) -> str:
    return (f"ui.crt from the ACME CA at {origin.directory}: serial {origin.serial}, expires "
            f"{origin.not_after:%Y-%m-%dT%H:%M:%SZ}, order {origin.order_url}")


def acme_origin_lines(origin: UiOrigin | None) -> list[str]:
    if origin is None:
        return ["ui.crt: ACME configured, but no order of vaultpki's wrote the current one"]
    return [f"ui.crt: from ACME directory {origin.directory}",
            f"  account {origin.account_url}",
            f"  order {origin.order_url} ({origin.challenge}), serial {origin.serial}, "
            f"expires {origin.not_after:%Y-%m-%dT%H:%M:%SZ}, ca-ui.crt {origin.root}"]
