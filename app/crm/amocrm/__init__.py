"""amoCRM (and Kommo): the API v4 client on `requests` and the CrmClient adapter.

`client` holds `AmoRest` (the request loop and recordings; its tokens are kept by `app.crm.oauth`) and
the wire helpers; `adapter` `AmoCrm` (the port). The names callers use are re-exported here.
"""

from app.crm.amocrm.adapter import LOST, WON, AmoCrm, semantics_of
from app.crm.amocrm.client import (
    AmoRest,
    PinnedAdapter,
    account_host,
    checked_host,
    error_from_response,
    fetch_recording,
    oauth_token_request,
    resolve_addresses,
    store_token_answer,
)

__all__ = [
    "LOST",
    "WON",
    "AmoCrm",
    "AmoRest",
    "PinnedAdapter",
    "account_host",
    "checked_host",
    "error_from_response",
    "fetch_recording",
    "oauth_token_request",
    "resolve_addresses",
    "semantics_of",
    "store_token_answer",
]
