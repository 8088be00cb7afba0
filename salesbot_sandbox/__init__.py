"""Local stand-ins for Shopify and Facebook OAuth, for demo mode and for tests.

Neither provider can be reached from here, so this app imitates what docs/providers.md records:
the consent pages, the redirects, the token endpoints and their error bodies, a little of the Admin API
(shop.json, a GraphQL endpoint with a few products, its cost and throttle) and of the Graph API (the
Messenger Send API, which records what a bot sent), and signed Messenger webhooks to a bot. Demo mode
mounts it at /sandbox; tests run it through httpx.ASGITransport or a real uvicorn. Every signature
(callback HMAC, webhook HMAC, signed_request, appsecret_proof, X-Hub-Signature-256) is computed
here from docs/providers.md with hmac/hashlib/base64, never with service.providers: two implementations
checked against each other is what makes a test against the sandbox mean something.

State lives in memory, read by tests through the plain attributes and helpers on `Sandbox`. Nothing is
logged: tokens, codes and secrets only ever leave in responses. `Sandbox.requests` keeps everything it
was sent (tests assert on it), so it grows for as long as the process runs.

Split by provider: common.py (constants, records, faults, helpers), base.py (the shared state and
plumbing), shopify.py, facebook.py, messenger.py (each a mixin over base), app.py (the routes).
It is a package of its own, beside `service`: only `salesbot demo` and the tests import it.
"""

from salesbot_sandbox.app import Sandbox
from salesbot_sandbox.common import DEFAULT_PAGES, SandboxConfig

__all__ = ["DEFAULT_PAGES", "Sandbox", "SandboxConfig"]
