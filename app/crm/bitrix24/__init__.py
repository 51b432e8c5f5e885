"""Bitrix24: the REST client (on the official b24pysdk) and the CrmClient adapter.

`client` holds `Bitrix24Rest` (the request loop; its tokens are kept by `app.crm.oauth`), `batch`
the batch building and list-page planning helpers, `adapter` `Bitrix24Crm` (the port). The names
callers use are re-exported here.
"""

from app.crm.bitrix24.adapter import Bitrix24Crm, notice_tag, parse_datetime, parse_decimal
from app.crm.bitrix24.batch import BatchResult, ListStream, build_command
from app.crm.bitrix24.client import Bitrix24Rest, NotARecording, audio_type, recording_path

__all__ = [
    "BatchResult",
    "Bitrix24Crm",
    "Bitrix24Rest",
    "ListStream",
    "NotARecording",
    "audio_type",
    "build_command",
    "notice_tag",
    "parse_datetime",
    "parse_decimal",
    "recording_path",
]
