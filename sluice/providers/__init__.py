"""Upstream providers: one small protocol (providers/base.py), one module or package per wire format."""
