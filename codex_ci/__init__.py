"""codex-ci: keep an OpenAI Codex CLI ChatGPT login alive and safe on CI runners."""

__version__ = "0.1.0"
