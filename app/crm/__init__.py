"""The CRM port and its adapters (Bitrix24, amoCRM)."""

from app.crm.factory import client_for

__all__ = ["client_for"]
