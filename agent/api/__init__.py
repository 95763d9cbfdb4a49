"""The agent's local HTTP API (docs/api.md): AAS Part 2 reads of the live model, sessions recorded as
usage events, and the guarded control write. aiohttp; inside the running agent."""
