"""The status page an agent serves at `/` on its `--metrics` port: one self-contained HTML
document (inline CSS, JavaScript and SVG: it works offline, nothing is fetched but
`/status.json` from the same agent, once a second). Read-only: it has no form and sends no
request that changes anything.

Element ids the headless-browser test reads: `leader`, `role`, `term`, `agent`, `updated`.
"""

from __future__ import annotations

from importlib import resources

# The page itself is status_page.html beside this module (package data): read once.
PAGE: bytes = resources.files("superstatic_agent").joinpath("status_page.html").read_bytes()
