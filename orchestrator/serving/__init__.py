"""``qlora-sweep serve``: adapters and their base model behind an OpenAI-compatible API on Ray
Serve (the protocol, the engine, the Serve app, the sources it serves, the command)."""
