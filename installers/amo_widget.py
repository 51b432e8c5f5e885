"""Build the amoCRM widget archive: ``python -m installers.amo_widget`` (``make amo-widget``) → dist/widget.zip.

The archive holds manifest.json (with the Digital Pipeline `dp.webhook_url` pointing at our backend),
script.js (with our backend address written in), i18n/ru.json and i18n/en.json, and the logos amoCRM asks
for in images/ (drawn here, so the repository holds no binaries; logo_dp.png is the Digital Pipeline one,
left_menu.svg the icon of our left-menu section, manifest `left_menu`).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from urllib.parse import urlsplit

SOURCE = Path(__file__).resolve().parent.parent / "widget" / "amocrm"
BACKEND_MARK = "%BACKEND_URL%"
LOCALES = ("ru", "en")
DP_PATH = "/amocrm/dp/robots"
# The action form's fields (manifest `dp.settings`): which robot, its parameters, and the account's secret.
DP_SETTINGS = ("robot", "reason", "days", "hour", "text", "secret")
# amoCRM's logo files and their sizes (width, height).
LOGOS: dict[str, tuple[int, int]] = {
    "logo_min.png": (84, 84),
    "logo_small.png": (108, 108),
    "logo.png": (130, 100),
    "logo_dp.png": (174, 109),
    "logo_medium.png": (240, 84),
    "logo_main.png": (400, 272),
}
# The left-menu section (manifest `left_menu`, location `widget_page`): its code and its icon.
LEFT_MENU_ITEM = "refusal_control"
LEFT_MENU_ICON = "images/left_menu.svg"
ORANGE = (0xFF, 0xA9, 0x00)
WHITE = (0xFF, 0xFF, 0xFF)


def png(width: int, height: int) -> bytes:
    """Our logo: an orange field with a white "stop" bar across the middle, as an RGB PNG."""
    bar_top, bar_bottom = height * 2 // 5, height * 3 // 5
    bar_left, bar_right = width // 5, width * 4 // 5
    rows = []
    for y in range(height):
        row = bytearray([0])  # filter type: none
        for x in range(width):
            inside = bar_top <= y < bar_bottom and bar_left <= x < bar_right
            row.extend(WHITE if inside else ORANGE)
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


def menu_icon() -> str:
    """The left-menu icon: the logo's white "stop" bar on an orange disc, as SVG."""
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24">'
        '<circle cx="12" cy="12" r="11" fill="#ffa900"/><rect x="5" y="10" width="14" height="4" fill="#ffffff"/>'
        "</svg>"
    )


def _base_url(backend_url: str) -> str:
    parts = urlsplit(backend_url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"not a base URL: {backend_url!r}")
    return backend_url.rstrip("/")


def render_script(backend_url: str) -> str:
    """script.js with the backend address written in."""
    base = _base_url(backend_url)
    script = (SOURCE / "script.js").read_text(encoding="utf-8")
    if BACKEND_MARK not in script:
        raise ValueError("script.js has no backend mark")
    return script.replace(BACKEND_MARK, base)


def render_manifest(backend_url: str) -> str:
    """manifest.json with the Digital Pipeline webhook address written in."""
    base = _base_url(backend_url)
    manifest = (SOURCE / "manifest.json").read_text(encoding="utf-8")
    if BACKEND_MARK not in manifest:
        raise ValueError("manifest.json has no backend mark")
    return manifest.replace(BACKEND_MARK, base)


def check_sources() -> dict[str, object]:
    """Validate the manifest and translations; returns the manifest."""
    manifest = json.loads((SOURCE / "manifest.json").read_text(encoding="utf-8"))
    widget = manifest["widget"]
    if sorted(widget["locale"]) != sorted(LOCALES):
        raise ValueError("manifest locales must be ru and en")
    for location in ("lcard-0", "card_sdk", "settings", "digital_pipeline", "widget_page"):
        if location not in manifest["locations"]:
            raise ValueError(f"manifest lacks the {location} location")
    menu = manifest.get("left_menu") or {}
    if list(menu) != [LEFT_MENU_ITEM] or menu[LEFT_MENU_ITEM] != {"title": "left_menu.title", "icon": LEFT_MENU_ICON}:
        raise ValueError(f"manifest left_menu must be the one section {LEFT_MENU_ITEM} with its title and icon")
    dp = manifest["dp"]
    if dp.get("webhook_url") != f"{BACKEND_MARK}{DP_PATH}" or not isinstance(dp.get("action_multiple"), bool):
        raise ValueError("manifest dp block needs webhook_url (backend mark + DP path) and action_multiple")
    if tuple(dp["settings"]) != DP_SETTINGS:
        raise ValueError(f"manifest dp.settings must be {DP_SETTINGS}")
    for key, spec in dp["settings"].items():
        # Field types a widget's settings (and so its dp.settings) may use (developers.kommo.com/docs/field-types).
        if spec.get("type") not in ("text", "pass", "users", "users_lp", "custom") or spec.get("name") != f"dp.{key}":
            raise ValueError(f"manifest dp.settings.{key} has a wrong type or name")
    for locale in LOCALES:
        strings = json.loads((SOURCE / "i18n" / f"{locale}.json").read_text(encoding="utf-8"))
        for key in ("name", "description", "short_description", "tour_description"):
            if not strings["widget"].get(key):
                raise ValueError(f"i18n/{locale}.json lacks widget.{key}")
        for key in ("title", "loading", "error"):
            if not strings["tab"].get(key):
                raise ValueError(f"i18n/{locale}.json lacks tab.{key}")
        for key in DP_SETTINGS:
            if not strings["dp"].get(key):
                raise ValueError(f"i18n/{locale}.json lacks dp.{key}")
        for key in ("loading", "error", "choose"):
            if not strings["dp_form"].get(key):
                raise ValueError(f"i18n/{locale}.json lacks dp_form.{key}")
        for section, keys in (("main", ("title", "loading")), ("left_menu", ("title",))):
            for key in keys:
                if not strings[section].get(key):
                    raise ValueError(f"i18n/{locale}.json lacks {section}.{key}")
    return manifest


def build(out: Path, backend_url: str) -> Path:
    """Write the archive; returns its path."""
    check_sources()
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", render_manifest(backend_url))
        archive.writestr("script.js", render_script(backend_url))
        for locale in LOCALES:
            archive.write(SOURCE / "i18n" / f"{locale}.json", f"i18n/{locale}.json")
        for name, (width, height) in LOGOS.items():
            archive.writestr(f"images/{name}", png(width, height))
        archive.writestr(LEFT_MENU_ICON, menu_icon())
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: --backend (default PUBLIC_URL) and --out (default dist/widget.zip)."""
    parser = argparse.ArgumentParser(description="Build the amoCRM widget archive")
    parser.add_argument("--backend", default=os.environ.get("PUBLIC_URL", ""), help="our public base URL")
    parser.add_argument("--out", default="dist/widget.zip", type=Path)
    args = parser.parse_args(argv)
    if not args.backend:
        parser.error("set PUBLIC_URL or pass --backend https://your-app.example")
    try:
        path = build(args.out, args.backend)
    except (ValueError, KeyError, OSError) as error:
        print(f"widget build failed: {error}", file=sys.stderr)
        return 1
    print(f"built {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
