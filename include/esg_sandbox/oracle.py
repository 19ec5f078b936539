"""The expected report rows, derived from the generator's intent (pure)."""

from datetime import date

from include.esg_sandbox.dataset import ESG_FIELDS, Dataset, Rating, invalid_rating, normal_rating, partial_rating
from include.esg_sandbox.faultplan import FaultPlan, expected_status

REPORT_COLUMNS: tuple[str, ...] = ("account_id", "account_name", *ESG_FIELDS, "processing_status")


def served_rating(dataset: Dataset, plan: FaultPlan, account_id: str, as_of: date) -> Rating:
    """Return the rating body the server serves once an account's transient faults are past."""
    kind = plan.kind_of(account_id)
    if kind == "partial":
        return partial_rating(dataset.seed, account_id, as_of)
    if kind == "invalid":
        return invalid_rating(dataset.seed, account_id, as_of)
    return normal_rating(dataset.seed, account_id, as_of)


def expected_row(dataset: Dataset, plan: FaultPlan, account_id: str, as_of: date) -> list[str]:
    """Return the report row of one active account, before formula escaping."""
    account = dataset.by_id[account_id]
    status = expected_status(plan.kind_of(account_id))
    if status == "Failed":
        fields: tuple[str, ...] = ("",) * len(ESG_FIELDS)
    else:
        fields = served_rating(dataset, plan, account_id, as_of).expected
    return [account.account_id, account.account_name, *fields, status]


def expected_report(dataset: Dataset, plan: FaultPlan, as_of: date) -> dict[str, list]:
    """Return the oracle: the report columns and one row per active account, sorted by account_id."""
    rows = [expected_row(dataset, plan, account_id, as_of) for account_id in dataset.active_ids]
    return {"columns": list(REPORT_COLUMNS), "rows": rows}
