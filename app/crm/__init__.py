"""The CRM port and its adapters (Bitrix24, amoCRM)."""
