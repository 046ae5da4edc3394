"""Thin HTTP routers, one per resource; the logic lives in app/services."""
