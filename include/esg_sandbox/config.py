"""Settings of a sandbox run: fixed at start, some adjustable at runtime."""

import math
from dataclasses import asdict, dataclass, field

DEFAULT_CLIENTS: dict[str, str] = {"esg-local": "esg-local-secret"}
# Settings POST /_sandbox/config may change while the server runs.
RUNTIME_KEYS: tuple[str, ...] = ("latency_ms", "latency_jitter_ms", "rate_limit", "token_lifetime", "trickle_seconds")


def parse_client(text: str) -> tuple[str, str]:
    """Parse ID:SECRET (the secret may itself contain ':')."""
    client_id, sep, secret = text.partition(":")
    if not sep or not client_id or not secret:
        raise ValueError(f"client must be ID:SECRET, got {text!r}")
    return client_id, secret


@dataclass
class SandboxConfig:
    """All options of a sandbox run."""

    accounts: int = 279
    inactive: int | None = None
    seed: int = 42
    rate_limit: int = 50
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    token_lifetime: int = 300
    clients: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CLIENTS))
    faults: str = "default"
    trickle_seconds: float = 30.0

    def __post_init__(self) -> None:
        """Fill the default inactive count and validate every setting."""
        if self.inactive is None:
            self.inactive = round(self.accounts * 0.1)
        if self.accounts < 0 or self.inactive < 0:
            raise ValueError("accounts and inactive must not be negative")
        if not self.clients:
            raise ValueError("at least one client is required")
        self.update({key: getattr(self, key) for key in RUNTIME_KEYS})

    def update(self, values: dict[str, object]) -> None:
        """Validate and apply runtime settings; raise ValueError naming the bad one."""
        unknown = sorted(set(values) - set(RUNTIME_KEYS))
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; settable: {list(RUNTIME_KEYS)}")
        checked: dict[str, float | int] = {}
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{key} must be a number, got {value!r}")
            if key in ("rate_limit", "token_lifetime"):
                if value != int(value) or value < 1:
                    raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
                checked[key] = int(value)
            elif value < 0:
                raise ValueError(f"{key} must be >= 0, got {value!r}")
            else:
                checked[key] = float(value)
        for key, value in checked.items():
            setattr(self, key, value)

    def as_dict(self) -> dict[str, object]:
        """Return the settings as JSON-ready data, without client secrets."""
        data = asdict(self)
        data["clients"] = sorted(self.clients)
        return data
