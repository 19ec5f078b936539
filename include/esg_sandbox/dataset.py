"""Deterministic accounts and ESG ratings of the sandbox (pure: no I/O, no web imports)."""

import json
import random
import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

ACTIVE = "active"
INACTIVE = "inactive"
CLOSED = "closed"

# Spelled out from the contract rather than imported from the job: the sandbox stands in for other
# teams' systems, and its oracle must not share the definitions of the code it checks.
ESG_FIELDS: tuple[str, ...] = (
    "overall_esg_score",
    "environmental_score",
    "social_score",
    "governance_score",
    "primary_esg_focus",
    "primary_focus_score",
    "analysis_date",
)
SCORE_FIELDS: frozenset[str] = frozenset(
    {"overall_esg_score", "environmental_score", "social_score", "governance_score", "primary_focus_score"}
)
PILLARS: tuple[str, ...] = ("Environmental", "Social", "Governance")
PILLAR_FIELD: dict[str, str] = {
    "Environmental": "environmental_score",
    "Social": "social_score",
    "Governance": "governance_score",
}

# Below this many active accounts the dataset is too small to hold every hard case.
HARD_CASES_MIN_ACCOUNTS = 20
MAX_ID_LENGTH = 64

# Ids that break naive URL building, CSV writing or spreadsheets; all active.
HARD_ACTIVE_IDS: tuple[str, ...] = (
    "AC/2024/000017",
    "AC 000 SPACE",
    "AC?000=1&x=2",
    "AC#000HASH",
    "AC%2F000%20PCT",
    "AC-Ünïcødé-東京-0001",
    "=AC000EQ",
    "-AC000MINUS",
    "+AC000PLUS",
    "@AC000AT",
    "AC-" + "L" * 56 + "-0064",
)
# Hard ids among the non-active accounts, so the status filter is exercised with them too.
HARD_INACTIVE_IDS: tuple[tuple[str, str], ...] = (
    ("AC/INACTIVE/0001", INACTIVE),
    ("=AC-CLOSED-0002", CLOSED),
)

# Names typed by people: every one must survive CSV quoting and formula escaping.
NASTY_NAMES: tuple[str, ...] = (
    "Smith, Jones & Partners, LLC",
    'The "Quoted" Growth Fund',
    "First Line\r\nSecond Line Holdings",
    "Lone\nLine Feed Capital",
    "Lone\rCarriage Return Partners",
    "Tab\tSeparated Trust",
    '=HYPERLINK("http://evil.example/","click")',
    "+1 Growth Fund",
    "-5% Short Duration Fund",
    "@Mention Investments",
    "\tLeading Tab Fund",
    "\rLeading CR Fund",
    "株式会社サンプル投資顧問",
    "صندوق الاستثمار الأخضر",
    "Ελληνική Επενδυτική Α.Ε.",
    "Инвестиционный фонд «Север»",
    "Green Future Fund 🌱🌍",
    "   Padded Name Ltd   ",
    'Mixed, "All"\r\n=Of Them',
)

_NAME_FIRST = (
    "Acme", "Blue Ridge", "Cedar", "Delta", "Evergreen", "Falcon", "Granite", "Harbor", "Iron Oak",
    "Juniper", "Keystone", "Lakeside", "Meridian", "Northwind", "Oakmont", "Pinnacle", "Quarry",
    "Redwood", "Summit", "Tidewater", "Union", "Valley", "Westbrook", "Yellowstone", "Zenith",
)  # fmt: skip
_NAME_MIDDLE = (
    "Capital", "Holdings", "Investments", "Asset Management", "Partners", "Wealth", "Ventures",
    "Advisors", "Securities", "Equity", "Trust", "Family Office", "Pension Plan", "Endowment",
)  # fmt: skip
_NAME_SUFFIX = ("", "", "", " LLC", " Inc.", " Ltd", " LP", " Group", " Fund I", " Fund II", " SA", " GmbH")

# Share of plain-looking accounts that get a nasty name as well, so large datasets keep some.
_NASTY_SPRINKLE = 0.03
_EXOTIC_LITERAL_SHARE = 0.06
_FRACTIONS = ("", "", "", ".5", ".5", ".25", ".75", ".1", ".2", ".4", ".6", ".8", ".05", ".35", ".65", ".95")
_AS_OF_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def seeded_rng(*parts: object) -> random.Random:
    """Return a Random seeded from the given parts (stable across processes and Python runs)."""
    # str seeds are hashed with SHA-512, unlike hash(), so PYTHONHASHSEED does not matter.
    return random.Random("\x1f".join(str(p) for p in parts))


def parse_as_of(text: str) -> date:
    """Parse a strict YYYY-MM-DD date; raise ValueError otherwise."""
    if not _AS_OF_RE.fullmatch(text):
        raise ValueError(f"as_of must be YYYY-MM-DD, got {text!r}")
    value = date.fromisoformat(text)
    if not 1900 <= value.year <= 9000:
        raise ValueError(f"as_of year out of range: {text!r}")
    return value


def number_text(literal: str) -> str:
    """Return the report text of a JSON number literal: plain decimal notation, as received."""
    return format(Decimal(literal), "f")


@dataclass(frozen=True, slots=True)
class Account:
    """One account as Account Management lists it."""

    account_id: str
    account_name: str
    status: str

    def as_dict(self) -> dict[str, str]:
        """Return the account as the listing's JSON object."""
        return {"account_id": self.account_id, "account_name": self.account_name, "status": self.status}


@dataclass(frozen=True, slots=True)
class Rating:
    """An ESG rating body as served, with the report text the job must derive from it."""

    account_id: str
    # JSON text per ESG field, in ESG_FIELDS order; None means the key is absent from the body.
    literals: tuple[str | None, ...]
    # Report text per ESG field ("" where the field is missing, null or invalid).
    expected: tuple[str, ...]

    def body(self) -> bytes:
        """Return the JSON body, built by hand so number literals are exactly as chosen."""
        parts = ['{"account_id": ' + json.dumps(self.account_id, ensure_ascii=False)]
        parts.extend(f'"{name}": {lit}' for name, lit in zip(ESG_FIELDS, self.literals, strict=True) if lit is not None)
        return (", ".join(parts) + "}").encode()

    @property
    def valid_count(self) -> int:
        """Return how many of the seven ESG fields are valid."""
        return sum(1 for text in self.expected if text)


def _plain(value: Decimal) -> str:
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _score_value(rng: random.Random) -> Decimal:
    roll = rng.random()
    if roll < 0.004:
        return Decimal(0)
    if roll < 0.008:
        return Decimal(100)
    whole = min(99, max(0, int(rng.gauss(68, 14))))
    return Decimal(f"{whole}{rng.choice(_FRACTIONS)}")


def _score_literal(rng: random.Random, value: Decimal) -> str:
    """Return a JSON number literal for value: mostly plain, sometimes in another valid spelling."""
    plain = _plain(value)
    if rng.random() >= _EXOTIC_LITERAL_SHARE:
        return plain
    if value == 0:
        return rng.choice(("0", "0.0", "0e0"))
    if value == 100:
        return rng.choice(("1e2", "100.0", "1E+2", "1.0E2"))
    form = rng.randrange(3)
    if form == 0:
        # One digit before the point: 72.5 -> 7.25E1, 8.5 -> 8.5E0.
        exponent = 1 if value >= 10 else 0
        return _plain(value.scaleb(-exponent)) + f"E{exponent}"
    if form == 1:
        return plain + ("0" if "." in plain else ".0")
    return _plain(value.scaleb(1)) + "e-1"


def _date_literal(value: date) -> str:
    return f'"{value.isoformat()}"'


def normal_rating(seed: int, account_id: str, as_of: date) -> Rating:
    """Return the valid rating of an account as of a date (deterministic per seed, id and date)."""
    rng = seeded_rng(seed, "rating", account_id, as_of.isoformat())
    pillars = [_score_value(rng) for _ in PILLARS]
    pillar_literals = [_score_literal(rng, value) for value in pillars]
    overall = (sum(pillars) / 3).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    overall_literal = _score_literal(rng, Decimal(_plain(overall)))
    focus_index = rng.randrange(len(PILLARS))
    analysis = as_of - timedelta(days=rng.randint(0, 30))
    literals = (
        overall_literal,
        *pillar_literals,
        f'"{PILLARS[focus_index]}"',
        pillar_literals[focus_index],
        _date_literal(analysis),
    )
    expected = (
        number_text(overall_literal),
        *(number_text(lit) for lit in pillar_literals),
        PILLARS[focus_index],
        number_text(pillar_literals[focus_index]),
        analysis.isoformat(),
    )
    return Rating(account_id, literals, expected)


# Invalid score values grouped by the way they are wrong.
_INVALID_SCORE_WAYS: dict[str, tuple[str, ...]] = {
    "above_range": ("101", "100.01", "1e3", "250"),
    "below_range": ("-0.5", "-1", "-100"),
    "string": ('"72"', '"72.5"', '"N/A"'),
    "boolean": ("true", "false"),
    "nan": ("NaN",),
    "infinity": ("Infinity", "-Infinity"),
    "container": ("[]", "{}", "[72.5]"),
}
_INVALID_FOCUS: tuple[str, ...] = ('"Economic"', '"ESG"', '""', "42", "true", '["Social"]')


def _invalid_dates(as_of: date) -> tuple[str, ...]:
    year = as_of.year
    later = as_of + timedelta(days=1 + as_of.toordinal() % 5)
    return (
        f'"{year}-02-30"',
        f'"{year}-13-01"',
        '"not-a-date"',
        f'"{year}/{as_of.month:02d}/{as_of.day:02d}"',
        _date_literal(later),
        f"{year}{as_of.month:02d}{as_of.day:02d}",
        '""',
    )


def _invalid_literal(rng: random.Random, field: str, as_of: date) -> str:
    if field in SCORE_FIELDS:
        way = rng.choice(sorted(_INVALID_SCORE_WAYS))
        return rng.choice(_INVALID_SCORE_WAYS[way])
    if field == "primary_esg_focus":
        return rng.choice(_INVALID_FOCUS)
    return rng.choice(_invalid_dates(as_of))


def partial_rating(seed: int, account_id: str, as_of: date) -> Rating:
    """Return a rating with 1-4 fields missing, null or invalid and the rest valid."""
    base = normal_rating(seed, account_id, as_of)
    rng = seeded_rng(seed, "partial", account_id, as_of.isoformat())
    broken = set(rng.sample(ESG_FIELDS, rng.randint(1, 4)))
    literals: list[str | None] = list(base.literals)
    expected = list(base.expected)
    for index, field in enumerate(ESG_FIELDS):
        if field not in broken:
            continue
        mode = rng.choice(("missing", "null", "invalid", "invalid"))
        if mode == "missing":
            literals[index] = None
        elif mode == "null":
            literals[index] = "null"
        else:
            literals[index] = _invalid_literal(rng, field, as_of)
        expected[index] = ""
    return Rating(account_id, tuple(literals), tuple(expected))


def invalid_rating(seed: int, account_id: str, as_of: date) -> Rating:
    """Return a rating whose seven fields are all present and invalid, each in a different way."""
    rng = seeded_rng(seed, "invalid", account_id, as_of.isoformat())
    score_fields = [field for field in ESG_FIELDS if field in SCORE_FIELDS]
    ways = rng.sample(sorted(_INVALID_SCORE_WAYS), len(score_fields))
    by_field = {field: rng.choice(_INVALID_SCORE_WAYS[way]) for field, way in zip(score_fields, ways, strict=True)}
    # Each field must be wrong in its own way, so skip spellings another field already uses.
    by_field["primary_esg_focus"] = rng.choice([lit for lit in _INVALID_FOCUS if lit not in by_field.values()])
    by_field["analysis_date"] = rng.choice([lit for lit in _invalid_dates(as_of) if lit not in by_field.values()])
    literals = tuple(by_field[field] for field in ESG_FIELDS)
    return Rating(account_id, literals, ("",) * len(ESG_FIELDS))


def _plain_name(rng: random.Random) -> str:
    return f"{rng.choice(_NAME_FIRST)} {rng.choice(_NAME_MIDDLE)}{rng.choice(_NAME_SUFFIX)}"


class Dataset:
    """All accounts of a seed, in the (shuffled) order Account Management lists them."""

    def __init__(self, active: int, inactive: int, seed: int) -> None:
        if active < 0 or inactive < 0:
            raise ValueError("account counts must not be negative")
        self.seed = seed
        self.n_active = active
        self.n_inactive = inactive
        self.accounts: list[Account] = _build_accounts(active, inactive, seed)
        self.by_id: dict[str, Account] = {account.account_id: account for account in self.accounts}
        self.active_ids: list[str] = sorted(a.account_id for a in self.accounts if a.status == ACTIVE)
        self.hard_ids: frozenset[str] = frozenset(HARD_ACTIVE_IDS + tuple(i for i, _ in HARD_INACTIVE_IDS)) & frozenset(
            self.by_id
        )

    def listing(self, status: str) -> list[Account]:
        """Return the accounts with a status filter (active, inactive = inactive or closed, all)."""
        if status == "all":
            return list(self.accounts)
        if status == ACTIVE:
            return [a for a in self.accounts if a.status == ACTIVE]
        return [a for a in self.accounts if a.status != ACTIVE]

    def rating(self, account_id: str, as_of: date) -> Rating:
        """Return the normal rating of an account."""
        return normal_rating(self.seed, account_id, as_of)


def _build_accounts(n_active: int, n_inactive: int, seed: int) -> list[Account]:
    rng = seeded_rng(seed, "accounts")
    with_hard = n_active >= HARD_CASES_MIN_ACCOUNTS
    hard_active = list(HARD_ACTIVE_IDS) if with_hard else []
    hard_inactive = list(HARD_INACTIVE_IDS[:n_inactive]) if with_hard else []
    width = max(6, len(str(3 * (n_active + n_inactive))))
    numbers = rng.sample(range(1, 10**width), n_active + n_inactive)
    plain_ids = [f"AC{number:0{width}d}" for number in numbers]

    accounts: list[Account] = []
    for index in range(n_active):
        account_id = hard_active[index] if index < len(hard_active) else plain_ids[index]
        if index < len(NASTY_NAMES):
            name = NASTY_NAMES[index]
        elif rng.random() < _NASTY_SPRINKLE:
            name = f"{rng.choice(NASTY_NAMES)} {index}"
        else:
            name = _plain_name(rng)
        accounts.append(Account(account_id, name, ACTIVE))
    for offset in range(n_inactive):
        if offset < len(hard_inactive):
            account_id, status = hard_inactive[offset]
        else:
            account_id, status = plain_ids[n_active + offset], rng.choice((INACTIVE, INACTIVE, CLOSED))
        accounts.append(Account(account_id, _plain_name(rng), status))
    rng.shuffle(accounts)
    return accounts
