"""The browser pages: playground, admin console and key owner page, served as static files."""

from sluice.web.assets import WebAssets, is_web_path

__all__ = ["WebAssets", "is_web_path"]
