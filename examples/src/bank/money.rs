//! Exact money: amounts are integer cents; decimals with at most two
//! places are read without rounding, so `0.1 + 0.2` style drift cannot
//! happen anywhere between a request and the stored event.

/// The largest amount taken, in cents (a trillion dollars): far below
/// 2^53, so every amount is also exact as a JSON float.
pub const MAX_CENTS: u64 = 100_000_000_000_000;

/// The cents of a decimal amount, written with at most two places
/// (`"12"`, `"12.5"`, `"12.50"`; no sign, no exponent), if it is one and at
/// most [`MAX_CENTS`].
///
/// ```
/// use eventcore_examples::bank::money::parse_cents;
/// assert_eq!(parse_cents("1000.25"), Some(100_025));
/// assert_eq!(parse_cents("0.1"), Some(10));
/// assert_eq!(parse_cents("0.125"), None);
/// assert_eq!(parse_cents("-1"), None);
/// ```
pub fn parse_cents(text: &str) -> Option<u64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 15 || !digits(whole) || fraction.len() > 2 {
        return None;
    }
    if text.contains('.') && fraction.is_empty() || !digits(fraction) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut cents: u64 = 0;
    for (i, b) in fraction.bytes().enumerate() {
        cents += u64::from(b - b'0') * if i == 0 { 10 } else { 1 };
    }
    let total = whole.checked_mul(100)?.checked_add(cents)?;
    (total <= MAX_CENTS).then_some(total)
}

/// The cents of a JSON number read as a float, if it is a whole number of
/// cents (the float nearest a decimal with at most two places) between 0
/// and [`MAX_CENTS`]. Exact: `0.1` is 10 cents, `0.105` is refused.
///
/// ```
/// use eventcore_examples::bank::money::cents_from_f64;
/// assert_eq!(cents_from_f64(0.1), Some(10));
/// assert_eq!(cents_from_f64(1000.0), Some(100_000));
/// assert_eq!(cents_from_f64(0.105), None);
/// assert_eq!(cents_from_f64(-2.0), None);
/// ```
pub fn cents_from_f64(amount: f64) -> Option<u64> {
    if !amount.is_finite() || amount < 0.0 {
        return None;
    }
    let cents = (amount * 100.0).round();
    // Below 2^53 every integer is exact and `cents / 100.0` is the float
    // nearest that decimal, which is what parsing it gave `amount`.
    if cents > MAX_CENTS as f64 || cents / 100.0 != amount {
        return None;
    }
    Some(cents as u64)
}

/// Cents as a JSON number of dollars (`130000` is `1300.0`, `30` is
/// `0.3`): the float nearest the decimal, which prints as that decimal.
pub fn dollars(cents: i128) -> f64 {
    cents as f64 / 100.0
}

/// Cents as decimal text with two places: `130000` is `"1300.00"`.
pub fn format(cents: i128) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_two_place_decimal_reads_exactly_both_ways() {
        for cents in (0..100_000u64).chain([MAX_CENTS - 1, MAX_CENTS]) {
            let text = format!("{}.{:02}", cents / 100, cents % 100);
            assert_eq!(parse_cents(&text), Some(cents), "{text}");
            let float: f64 = text.parse().unwrap();
            assert_eq!(cents_from_f64(float), Some(cents), "{text}");
            assert_eq!(dollars(i128::from(cents)), float, "{text}");
            assert_eq!(format(i128::from(cents)), text);
        }
    }

    #[test]
    fn no_drift_from_adding_floats() {
        let sum = parse_cents("0.1").unwrap() + parse_cents("0.2").unwrap();
        assert_eq!(sum, parse_cents("0.3").unwrap());
        assert_eq!(dollars(i128::from(sum)).to_string(), "0.3");
    }

    #[test]
    fn malformed_or_too_precise_amounts_are_refused() {
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "1.234",
            "-1",
            "+1",
            "1e2",
            "1,00",
            " 1",
            "0x10",
            "1.2.3",
            "1000000000000.01",
            "9999999999999999",
        ] {
            assert_eq!(parse_cents(bad), None, "{bad:?}");
        }
        for bad in [0.001, 0.105, -0.01, f64::NAN, f64::INFINITY, 1e13] {
            assert_eq!(cents_from_f64(bad), None, "{bad}");
        }
    }
}
