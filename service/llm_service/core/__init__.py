"""The provider core: plain Python types and events in, LiteLLM underneath, no gRPC.

Three seams: `request` decides what to send (LiteLLM's provider knowledge plus the
reference provider's rules), `transport` sends it, `decode` turns what comes back
into `Chunk`s. Retries (`retry`), tool-call assembly and usage (`assembly`) work on
chunks and events only, never on LiteLLM objects.
"""
