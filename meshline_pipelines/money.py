"""Exact money: integer minor units plus an ISO 4217 currency code.

Exponents come from the `iso4217` package (the ISO 4217 maintenance agency's table). Source APIs
that count minor units differently keep their own table here, next to the conversion that uses it.
"""

import math
from dataclasses import dataclass
from decimal import Decimal

import pandas as pd
from iso4217 import Currency

ISO_EXPONENTS: dict[str, int] = {
    currency.code: currency.exponent for currency in Currency if currency.exponent is not None
}

# Stripe counts amounts in its own minor units (https://docs.stripe.com/currencies). These
# currencies are zero-decimal in Stripe's API.
STRIPE_ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
# Stripe keeps ISK two-decimal for backwards compatibility although ISO 4217 gives it no minor
# unit: 100 in the API is 1 krona, and amounts must be multiples of 100. HUF and TWD are two-decimal
# in Stripe charges (only their payouts must be whole units), which matches ISO 4217.
STRIPE_EXPONENT_OVERRIDES = {"ISK": 2}


class UnknownCurrencyError(ValueError):
    pass


def iso_exponent(currency: str) -> int:
    try:
        return ISO_EXPONENTS[currency.upper()]
    except KeyError:
        raise UnknownCurrencyError(
            f"unknown currency {currency!r}: expected an ISO 4217 code with a minor unit, such as USD"
        ) from None


def stripe_exponent(currency: str) -> int:
    code = currency.upper()
    if code in STRIPE_ZERO_DECIMAL:
        return 0
    if code in STRIPE_EXPONENT_OVERRIDES:
        return STRIPE_EXPONENT_OVERRIDES[code]
    return iso_exponent(code)


@dataclass
class ParsedMoney:
    """Minor units (Int64, NA where missing or invalid) and an error message per invalid value."""

    minor: pd.Series
    error: pd.Series


_DECIMAL_PATTERN = r"^(?P<sign>[-+]?)(?P<whole>\d+)(?:\.(?P<fraction>\d*))?$"


def _currency_codes(currencies: pd.Series) -> pd.Series:
    return currencies.astype("string").str.strip().str.upper()


def _amount_text(amounts: pd.Series) -> pd.Series:
    # JSON numbers arrive as floats (Shopify sends some refund subtotals that way). A float's repr
    # is the shortest decimal that reads back to it, so "195.66" stays exact. Pandas' own float
    # formatting rounds to 15 digits, which could hide a value with more decimals than allowed.
    floats = amounts.map(lambda value: isinstance(value, float))
    if floats.any():
        amounts = amounts.astype(object).where(~floats, amounts[floats].map(lambda value: None if math.isnan(value) else repr(value)))
    return amounts.astype("string").str.strip()


def decimal_to_minor(amounts: pd.Series, currencies: pd.Series) -> ParsedMoney:
    """Convert decimal amounts ("598.94", 12.5) to minor units of each row's currency.

    A value with more decimals than its currency allows is rejected, never rounded: "1.005" USD
    is an error, "348.0" USD is 34800.
    """
    text = _amount_text(amounts)
    codes = _currency_codes(currencies)
    exponents = codes.map(ISO_EXPONENTS)

    minor = pd.Series(pd.NA, index=amounts.index, dtype="Int64")
    error = pd.Series(pd.NA, index=amounts.index, dtype="string")

    present = text.notna() & (text != "")
    unknown = present & codes.notna() & exponents.isna()
    error[unknown] = "unknown currency '" + codes[unknown] + "': expected an ISO 4217 code such as USD"

    parts = text.str.extract(_DECIMAL_PATTERN)
    malformed = present & parts["whole"].isna()
    error[malformed] = "invalid amount '" + text[malformed] + "': expected a decimal number such as 12.50"

    parsable = present & ~malformed & exponents.notna()
    for exponent in sorted(exponents[parsable].unique()):
        rows = parsable & (exponents == exponent)
        fraction = parts.loc[rows, "fraction"].fillna("").str.rstrip("0")
        too_precise = fraction.str.len() > exponent
        too_precise_rows = too_precise[too_precise].index
        error[too_precise_rows] = (
            "amount '" + text[too_precise_rows] + "' has more decimals than "
            + codes[too_precise_rows] + f" allows ({int(exponent)})"
        )

        exact = too_precise[~too_precise].index
        digits = parts.loc[exact, "whole"] + fraction[exact].str.ljust(int(exponent), "0")
        sign = parts.loc[exact, "sign"].map({"-": -1}).fillna(1).astype("Int64")
        minor[exact] = digits.astype("Int64") * sign

    return ParsedMoney(minor=minor, error=error)


def api_minor_to_minor(amounts: pd.Series, currencies: pd.Series, api_exponent=stripe_exponent) -> ParsedMoney:
    """Convert integer amounts in an API's own minor units (Stripe's) to ISO minor units."""
    codes = _currency_codes(currencies)
    numbers = pd.to_numeric(amounts, errors="coerce")

    minor = pd.Series(pd.NA, index=amounts.index, dtype="Int64")
    error = pd.Series(pd.NA, index=amounts.index, dtype="string")

    present = amounts.notna()
    not_integer = present & (numbers.isna() | (numbers % 1 != 0))
    error[not_integer] = "invalid amount '" + amounts[not_integer].astype("string") + "': expected an integer"

    convertible = present & ~not_integer & codes.notna()
    shifts = pd.Series(pd.NA, index=amounts.index, dtype="Int64")
    for code in codes[convertible].unique():
        rows = convertible & (codes == code)
        try:
            shifts[rows] = api_exponent(code) - iso_exponent(code)
        except UnknownCurrencyError as exc:
            error[rows] = str(exc)

    for shift in shifts.dropna().unique():
        rows = shifts.notna() & (shifts == shift) & error.isna()
        values = numbers[rows].astype("Int64")
        if shift <= 0:
            minor[rows] = values * (10 ** int(-shift))
            continue
        divisor = 10 ** int(shift)
        inexact = values % divisor != 0
        inexact_rows = inexact[inexact].index
        error[inexact_rows] = (
            "amount " + values[inexact_rows].astype("string") + " " + codes[inexact_rows]
            + f" is not a multiple of {divisor}, so it has no exact ISO 4217 value"
        )
        exact_rows = inexact[~inexact].index
        minor[exact_rows] = values[exact_rows] // divisor

    return ParsedMoney(minor=minor, error=error)


def format_minor(amount: int | None, currency: str | None) -> str | None:
    """Render minor units as an exact decimal string: (59894, "USD") -> "598.94"."""
    if amount is None or currency is None or pd.isna(amount) or pd.isna(currency):
        return None
    exponent = iso_exponent(currency)
    return str(Decimal(int(amount)).scaleb(-exponent))
