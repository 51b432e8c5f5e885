"""Pick the CRM adapter for a portal."""

from __future__ import annotations

from app.core.models import Portal
from app.crm.port import CrmClient


def client_for(portal: Portal) -> CrmClient:
    """The CrmClient adapter for the portal's CRM."""
    if portal.crm == Portal.BITRIX24:
        from app.crm.bitrix24 import Bitrix24Crm

        return Bitrix24Crm(portal)
    if portal.crm == Portal.AMOCRM:
        from app.crm.amocrm import AmoCrm

        return AmoCrm(portal)
    raise ValueError(f"no CRM adapter for {portal.crm!r} (portal {portal.id})")
