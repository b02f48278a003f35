"""Built-in demo server speaking the Text Generation Inference (TGI) protocol.

It lets the arena run with no GPU, endpoint or token, and gives the tests a real HTTP server whose
failures can be ordered on demand. Each persona is a separate endpoint base URL,
``http://HOST:PORT/<persona>``, serving TGI's routes under it: ``POST /generate``,
``/generate_stream``, ``/v1/chat/completions`` (streaming or not) and ``/`` (TGI's compat route,
where huggingface_hub's ``text_generation`` posts), ``GET /info``, ``/health``, ``/v1/models``.

Personas (``builtin:<persona>`` in models.yaml): ``concise``, ``verbose``, ``markdown``, ``coder``.
Replies are deterministic functions of the last user message and quote its topic.

Fault knobs. Each can be set per persona, ``DemoServer(faults={"concise": Faults(error_at=3)})``,
or per request by header (e.g. ``AsyncInferenceClient(headers={"X-Demo-Error-At": "3"})``); a
header overrides the persona's setting. ``N`` counts generated tokens: the fault happens after N
tokens were sent, never if the reply is shorter, and only the earliest fault fires.

=========================  ==================  ==================================================
Header                     ``Faults`` field    Effect
=========================  ==================  ==================================================
X-Demo-Token-Latency-Ms    token_latency_ms    Sleep before each token (default: the server's
                                               ``token_latency_ms``, 0 unless configured).
X-Demo-Error-At: N         error_at            After N tokens, a "generation" error event in the
                                               200 stream (chat: then ``[DONE]``); HTTP 424 when
                                               not streaming.
X-Demo-Overload: 1         overload            HTTP 429 "overloaded"; streaming: an overloaded
                                               error event in a 200 stream, as TGI does.
X-Demo-Http-Status: S      http_status         Plain HTTP status S (4xx/5xx) with a TGI error body
                                               before anything else, on every route: a proxy or a
                                               non-TGI server.
X-Demo-Stall-At: N         stall_at            After N tokens send only ``: keep-alive`` comments
                                               until the client disconnects; not streaming: no
                                               answer at all.
X-Demo-Truncate-At: N      truncate_at         Close the stream after N tokens, without the final
                                               event or ``[DONE]``; HTTP 500
                                               "incomplete_generation" when not streaming.
X-Demo-Malformed-At: N     malformed_at        After N tokens a ``data:`` line that is not JSON,
                                               then the stream goes on; not streaming: a body that
                                               is not JSON.
(no header)                unhealthy           ``/health`` answers 503.
=========================  ==================  ==================================================

As in TGI, streaming requests report overload and validation errors as events in an HTTP 200
stream; only undecodable bodies, unknown personas and ``X-Demo-Http-Status`` get an HTTP error.
"""

from arena.demo_server.faults import HEADERS, Faults
from arena.demo_server.personas import PERSONAS
from arena.demo_server.protocol import model_id
from arena.demo_server.server import DemoServer, create_app

__all__ = ["HEADERS", "PERSONAS", "DemoServer", "Faults", "create_app", "model_id"]
