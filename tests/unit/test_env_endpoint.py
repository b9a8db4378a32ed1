"""The default endpoint between the environment and the API (real LMDB): an API change
stays across restarts until that very setting changes in the environment."""

from __future__ import annotations

from ebw import config
from ebw.store import Store
from ebw.supervisor import DEFAULT_ENDPOINT, apply_env_endpoint


def _start(store: Store, env: dict[str, str]) -> tuple[bool, dict]:
    with store.write() as txn:
        changed = apply_env_endpoint(store, txn, config.load(env).endpoint)
    with store.read() as txn:
        return changed, store.get_endpoint(txn, DEFAULT_ENDPOINT)


def _api_change(store: Store, **fields: object) -> None:
    with store.write() as txn:
        current = store.get_endpoint(txn, DEFAULT_ENDPOINT)
        store.put_endpoint(txn, DEFAULT_ENDPOINT, {**current, **fields})


def test_one_changed_variable_does_not_undo_the_other_api_changes(tmp_path):
    """The audit's case: prefix, digits and name set through the API, then only
    EBW_PROCEDURE_ID added to the environment: everything went back to the defaults."""
    store = Store(str(tmp_path), 16, sync=False)
    try:
        changed, ep = _start(store, {})
        assert changed and ep["accession_prefix"] == "EB" and ep["procedure_id"] == "POCUS"
        _api_change(store, accession_prefix="ACC", accession_digits=13, name="Main ED")
        changed, ep = _start(store, {})  # a restart, the environment as it was
        assert not changed and (ep["accession_prefix"], ep["accession_digits"], ep["name"]) == ("ACC", 13, "Main ED")
        changed, ep = _start(store, {"EBW_PROCEDURE_ID": "NEWENV"})
        assert changed and ep["procedure_id"] == "NEWENV"
        assert (ep["accession_prefix"], ep["accession_digits"], ep["name"]) == ("ACC", 13, "Main ED")
        # list settings too: an API value stays while the environment's is unchanged
        _api_change(store, vip_values=["SECRET"], calling_aets=["US1"])
        changed, ep = _start(store, {"EBW_PROCEDURE_ID": "NEWENV", "EBW_TIMEZONE": "Europe/Paris"})
        assert (ep["vip_values"], ep["calling_aets"], ep["timezone"]) == (["SECRET"], ["US1"], "Europe/Paris")
        # the setting the administrator changed in the environment wins over its API value
        _api_change(store, procedure_id="FROMAPI")
        changed, ep = _start(store, {"EBW_PROCEDURE_ID": "NEWENV", "EBW_ACCESSION_PREFIX": "XY"})
        assert (ep["accession_prefix"], ep["procedure_id"]) == ("XY", "FROMAPI")
    finally:
        store.close()
