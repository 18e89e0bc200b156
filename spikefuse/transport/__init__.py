"""The transport (ZeroMQ, and spikefuse's own same-host ``unix://``): the only spikefuse
package that imports ``zmq``.

One module per concern (import what you use from its module; this file imports nothing,
so a config model can take :class:`~spikefuse.transport.endpoint.Endpoint` or
:class:`~spikefuse.transport.config.SecurityConfig` without loading ZeroMQ):

* :mod:`.endpoint` - :class:`Endpoint`, the one endpoint type (parse, check, ipc path,
  loopback test, the default ``ipc://<run_dir>/<name>.sock``); no zmq.
* :mod:`.config` - pydantic models: :class:`SecurityConfig`, :class:`PublisherConfig`,
  :class:`SubscriberConfig`, :func:`load_security`; no zmq.
* :mod:`.queue` - :class:`InputQueue`, the per-stream ``keep`` / ``coalesce`` policies; no zmq.
* :mod:`.seq` - :func:`seq_step`, the one sequence rule (in order, gap, duplicate, back),
  and :class:`SeqTracker`, per-stream gaps and resets counted by it; no zmq.
* :mod:`.security` - CurveZMQ key files, the ZAP allow-list, ``spikefuse keygen``.
* :mod:`.publisher` - :class:`Publisher` (XPUB, never blocks, counts drops).
* :mod:`.subscriber` - :class:`Subscriber` (SUB, decodes, counts, applies the queue policy;
  raw frames with its checks: ``recv_frames``, ``accept``, ``dispatch``).
* :mod:`.aio` - the asyncio variants :class:`AsyncPublisher`, :class:`AsyncSubscriber`.
* :mod:`.raw` - :class:`RawSocket`, bare frames with no protocol (benchmark floors, tests).
* :mod:`.control` - :class:`ControlSocket`, ROUTER/DEALER request/reply for
  ``spikefuse agent`` and the launcher (docs/multihost.md).
* :mod:`.unix` - ``unix://`` endpoints under :class:`Publisher` / :class:`Subscriber`:
  AF_UNIX SEQPACKET on one host, one wake per hop, no I/O thread (docs/protocol.md 6.1).
"""
