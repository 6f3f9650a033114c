"""Per-role data schemas, declared once: the validator, the generator and docs/data.md follow them.

A node's file holds one row per enterprise: the ID column, the role's declared
feature columns, the label at the bank, plus any extra columns the user declares.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fedcredit.common.errors import FedCreditError

# Column kinds and what each accepts.
ID, FLOAT, INT, CATEGORY, LABEL = "id", "float", "int", "category", "label"
KINDS = (ID, FLOAT, INT, CATEGORY, LABEL)
KIND_EXPECTS = {
    ID: "a text identifier",
    FLOAT: "a number",
    INT: "a whole number",
    CATEGORY: "text from a fixed set of values",
    LABEL: "0 or 1",
}
ID_KINDS = ("uscc", "string")


@dataclass(frozen=True)
class Column:
    """One declared column: its kind, whether it may be missing, its allowed range or values."""

    name: str
    kind: str
    doc: str
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    values: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FedCreditError(f"column {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


@dataclass(frozen=True)
class RoleSchema:
    """The columns a node of one role must provide."""

    role: str
    columns: tuple[Column, ...]
    id_column: str = "uscc"
    id_kind: str = "uscc"
    label: str | None = None
    doc: str = ""

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def feature_columns(self) -> list[Column]:
        return [c for c in self.columns if c.kind not in (ID, LABEL)]

    def with_options(
        self, id_column: str | None = None, id_kind: str | None = None, extra: dict[str, str] | None = None
    ) -> "RoleSchema":
        """This schema with another ID column or kind and user-declared extra feature columns."""
        if id_kind is not None and id_kind not in ID_KINDS:
            raise FedCreditError(f"ID kind must be one of {', '.join(ID_KINDS)}, got {id_kind!r}")
        columns = list(self.columns)
        new_id = id_column or self.id_column
        if new_id != self.id_column:
            columns = [replace(c, name=new_id) if c.kind == ID else c for c in columns]
        for name, kind in (extra or {}).items():
            if kind not in (FLOAT, INT, CATEGORY):
                raise FedCreditError(f"extra column {name!r}: kind must be float, int or category, got {kind!r}")
            if name in [c.name for c in columns]:
                raise FedCreditError(f"extra column {name!r} is already declared for role {self.role!r}")
            columns.append(Column(name, kind, "user-declared extra column", nullable=True))
        return replace(self, columns=tuple(columns), id_column=new_id, id_kind=id_kind or self.id_kind)


def parse_extra(specs: list[str]) -> dict[str, str]:
    """Parse ``NAME:KIND`` declarations of extra columns (KIND is float, int or category)."""
    extra: dict[str, str] = {}
    for spec in specs:
        name, sep, kind = spec.partition(":")
        if not sep or not name.strip() or kind.strip() not in (FLOAT, INT, CATEGORY):
            raise FedCreditError(f"extra column {spec!r}: expected NAME:KIND with KIND float, int or category")
        extra[name.strip()] = kind.strip()
    return extra


_USCC = Column("uscc", ID, "Unified Social Credit Code (GB 32100-2015), 18 characters with check character")
INDUSTRIES = ("manufacturing", "wholesale_retail", "construction", "hospitality", "it_services", "transport", "agriculture")
TAX_RATINGS = ("A", "B", "M", "C", "D")
MONTHS = tuple(f"elec_kwh_m{m:02d}" for m in range(1, 13))

TAX = RoleSchema(
    role="tax",
    doc="Tax bureau: registration, declarations, payments and compliance of the last tax year.",
    columns=(
        _USCC,
        Column("industry", CATEGORY, "industry section of the tax registration", values=INDUSTRIES),
        Column("years_registered", FLOAT, "years since tax registration", minimum=0),
        Column("declared_revenue_cny", FLOAT, "declared annual revenue, CNY", minimum=0),
        Column("revenue_growth_yoy", FLOAT, "declared revenue growth over the previous year (ratio); missing for firms registered < 2 years", nullable=True, minimum=-1),
        Column("vat_paid_cny", FLOAT, "value-added tax paid in the year, CNY", minimum=0),
        Column("income_tax_paid_cny", FLOAT, "enterprise income tax paid, CNY; missing when not yet assessed", nullable=True, minimum=0),
        Column("taxpayer_credit_rating", CATEGORY, "taxpayer credit rating A/B/M/C/D (M: new or small taxpayer)", values=TAX_RATINGS),
        Column("ontime_filing_months_12m", INT, "months of the last 12 with the declaration filed on time", minimum=0, maximum=12),
        Column("tax_arrears_cny", FLOAT, "outstanding tax arrears, CNY", minimum=0),
        Column("social_insured_employees", INT, "employees with social insurance paid", minimum=0),
        Column("invoices_issued_12m", INT, "VAT invoices issued in 12 months", minimum=0),
    ),
)

UTILITIES = RoleSchema(
    role="utilities",
    doc="Utilities company: metered electricity, water and gas and payment behaviour.",
    columns=(
        _USCC,
        *(Column(m, FLOAT, f"electricity drawn in month {m[-2:]} of the last 12, kWh; missing when the meter was not read", nullable=True, minimum=0) for m in MONTHS),
        Column("water_m3_12m", FLOAT, "water drawn in 12 months, m3; missing when billed via the landlord", nullable=True, minimum=0),
        Column("gas_m3_12m", FLOAT, "gas drawn in 12 months, m3; missing without a gas connection", nullable=True, minimum=0),
        Column("late_payments_12m", INT, "utility bills paid late in 12 months", minimum=0),
        Column("disconnection_notices_24m", INT, "disconnection notices in 24 months", minimum=0),
        Column("avg_days_to_pay", FLOAT, "average days from bill to payment", minimum=0),
    ),
)

BANK = RoleSchema(
    role="bank",
    label="default_12m",
    doc="Bank (guest): credit relationship, repayment history, account flows, and the label.",
    columns=(
        _USCC,
        Column("loan_balance_cny", FLOAT, "outstanding loan balance, CNY", minimum=0),
        Column("credit_lines", INT, "open credit lines at this bank", minimum=0),
        Column("max_dpd_24m", INT, "maximum days past due over 24 months", minimum=0),
        Column("inflow_12m_cny", FLOAT, "account inflows over 12 months, CNY", minimum=0),
        Column("outflow_12m_cny", FLOAT, "account outflows over 12 months, CNY", minimum=0),
        Column("relationship_months", INT, "months since the first account was opened", minimum=0),
        Column("credit_utilization", FLOAT, "drawn / approved limit; missing without a revolving line", nullable=True, minimum=0),
        Column("overdraft_days_12m", INT, "days overdrawn in 12 months", minimum=0),
        Column("default_12m", LABEL, "1 when the enterprise defaulted (90+ days past due or write-off) within 12 months"),
    ),
)

HOST = RoleSchema(
    role="host",
    doc="Any further host (court records, social security, ...): the ID column plus extra columns the node declares.",
    columns=(_USCC,),
)

SCHEMAS: dict[str, RoleSchema] = {s.role: s for s in (BANK, TAX, UTILITIES, HOST)}
NODE_ROLES = ("bank", "tax", "utilities")


def schema_for(role: str) -> RoleSchema:
    """The declared schema of ``role``; unknown roles get a clear error."""
    try:
        return SCHEMAS[role]
    except KeyError:
        raise FedCreditError(f"unknown role {role!r}: expected one of {', '.join(SCHEMAS)}") from None


def custom_schema(role: str, label: str | None = None) -> RoleSchema:
    """A schema for data outside the built-in SME layout: the ID column, the label at the bank,
    and whatever feature columns the node declares as extra columns."""
    columns = [_USCC]
    if label is not None:
        columns.append(Column(label, LABEL, "1 for a default / bad outcome, 0 otherwise"))
    return RoleSchema(role=role, columns=tuple(columns), label=label, doc="custom layout: every feature declared")


def node_schema(role: str, layout: str = "standard", label: str | None = None) -> RoleSchema:
    """The schema a node validates against: its role's built-in one, or a custom layout."""
    if layout == "custom":
        return custom_schema(role, label if role == "bank" else None)
    if layout != "standard":
        raise FedCreditError(f"schema layout must be 'standard' or 'custom', got {layout!r}")
    return schema_for(role) if role in NODE_ROLES else replace(HOST, role=role)
