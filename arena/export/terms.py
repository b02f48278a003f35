"""The version of the data-sharing terms shown in the consent notice (`arena.ui.consent`)."""

TERMS_VERSION = "2026-11-22"
"""Bump when the notice's terms change: every recorded choice names the version it was made under,
and the dataset card names the current one."""
