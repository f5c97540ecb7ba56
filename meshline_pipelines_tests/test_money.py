import pandas as pd
import pytest

from meshline_pipelines.money import (
    UnknownCurrencyError, api_minor_to_minor, decimal_to_minor, format_minor, iso_exponent, stripe_exponent,
)


def test_decimal_amounts_use_each_currency_exponent():
    parsed = decimal_to_minor(pd.Series(["598.94", "500", "5.125", "348.0", "-3.54"]),
                              pd.Series(["USD", "JPY", "KWD", "usd", "USD"]))

    assert parsed.minor.tolist() == [59894, 500, 5125, 34800, -354]
    assert parsed.error.isna().all()


def test_decimal_json_numbers_stay_exact():
    parsed = decimal_to_minor(pd.Series([195.66, 0.1 + 0.2], dtype=object), pd.Series(["USD", "USD"]))

    assert parsed.minor.iloc[0] == 19566
    assert pd.isna(parsed.minor.iloc[1])
    assert "more decimals than USD allows" in parsed.error.iloc[1]


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("1.005", "USD", "amount '1.005' has more decimals than USD allows (2)"),
        ("12.5", "JPY", "amount '12.5' has more decimals than JPY allows (0)"),
        ("abc", "USD", "invalid amount 'abc'"),
        ("10.00", "XYZ", "unknown currency 'XYZ'"),
    ],
)
def test_decimal_invalid_values_are_named(amount, currency, message):
    parsed = decimal_to_minor(pd.Series([amount]), pd.Series([currency]))

    assert pd.isna(parsed.minor.iloc[0])
    assert message in parsed.error.iloc[0]


def test_missing_amount_is_not_an_error():
    parsed = decimal_to_minor(pd.Series([None], dtype=object), pd.Series(["USD"]))

    assert pd.isna(parsed.minor.iloc[0])
    assert pd.isna(parsed.error.iloc[0])


def test_stripe_exponents_follow_stripe_not_iso():
    assert stripe_exponent("jpy") == 0
    assert stripe_exponent("UGX") == 0
    assert stripe_exponent("ISK") == 2
    assert iso_exponent("ISK") == 0
    assert stripe_exponent("HUF") == 2
    assert stripe_exponent("TWD") == 2
    assert stripe_exponent("KWD") == 3


def test_stripe_amounts_convert_to_iso_minor_units():
    parsed = api_minor_to_minor(pd.Series([1000, 1000, 50000, 123456, 5120, 5000]),
                                pd.Series(["usd", "jpy", "isk", "huf", "kwd", "ugx"]))

    assert parsed.minor.tolist() == [1000, 1000, 500, 123456, 5120, 5000]
    assert parsed.error.isna().all()


def test_stripe_fractional_isk_is_rejected():
    parsed = api_minor_to_minor(pd.Series([4010]), pd.Series(["isk"]))

    assert pd.isna(parsed.minor.iloc[0])
    assert parsed.error.iloc[0] == "amount 4010 ISK is not a multiple of 100, so it has no exact ISO 4217 value"


def test_stripe_non_integer_amount_is_rejected():
    parsed = api_minor_to_minor(pd.Series(["12.5"]), pd.Series(["usd"]))

    assert "expected an integer" in parsed.error.iloc[0]


def test_format_minor_is_exact():
    assert format_minor(59894, "USD") == "598.94"
    assert format_minor(1000, "JPY") == "1000"
    assert format_minor(-354, "USD") == "-3.54"
    assert format_minor(5125, "KWD") == "5.125"
    assert format_minor(None, "USD") is None


def test_unknown_currency_exponent_names_the_code():
    with pytest.raises(UnknownCurrencyError, match="unknown currency 'ABC'"):
        iso_exponent("ABC")
