//! Durations written the way people write them: `90s`, `30m`, `24h`, `7d` (invite
//! lifetimes, and how long `join --wait` keeps trying).

/// The longest an invite may stay valid: a year. Anything longer is almost certainly a
/// mistake, and a code that works for years is a code that leaks.
pub const MAX_INVITE_LIFETIME_SECS: u64 = 365 * DAY;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Parses an invite lifetime into seconds: digits followed by exactly one of `s`, `m`,
/// `h`, `d`. Rejects zero and anything over [`MAX_INVITE_LIFETIME_SECS`]. The error is a
/// sentence for the user (clap shows it after "invalid value … for '--expires'").
pub fn parse_invite_lifetime(text: &str) -> Result<u64, String> {
    parse(
        text,
        "an invite must stay valid for some time; use a duration above zero",
        "an invite may stay valid for at most 365 days (365d)",
    )
}

/// Parses how long `confer join --wait` keeps trying, in the same format; at most a year
/// (no invite is valid longer).
pub fn parse_wait(text: &str) -> Result<u64, String> {
    parse(
        text,
        "a wait of zero is no wait; leave --wait out, or give a duration above zero",
        "no invite is valid for more than 365 days, so there is no point waiting longer (365d)",
    )
}

fn parse(text: &str, zero: &str, too_long: &str) -> Result<u64, String> {
    const FORMAT: &str = "write a number followed by s, m, h or d, such as 90s, 30m, 24h or 7d";
    let text = text.trim();
    let Some(unit) = text.chars().last() else {
        return Err(format!("the duration is empty; {FORMAT}"));
    };
    let unit_secs = match unit {
        's' => 1,
        'm' => MINUTE,
        'h' => HOUR,
        'd' => DAY,
        c if c.is_ascii_digit() => return Err(format!("the duration has no unit; {FORMAT}")),
        c => return Err(format!("`{c}` is not a unit of time here; {FORMAT}")),
    };
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("that is not a duration; {FORMAT}"));
    }
    let count: u64 = digits.parse().map_err(|_| too_long.to_owned())?;
    let secs = count
        .checked_mul(unit_secs)
        .ok_or_else(|| too_long.to_owned())?;
    if secs == 0 {
        return Err(zero.to_owned());
    }
    if secs > MAX_INVITE_LIFETIME_SECS {
        return Err(too_long.to_owned());
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_unit() {
        assert_eq!(parse_invite_lifetime("90s"), Ok(90));
        assert_eq!(parse_invite_lifetime("30m"), Ok(30 * 60));
        assert_eq!(parse_invite_lifetime("24h"), Ok(24 * 3600));
        assert_eq!(parse_invite_lifetime("7d"), Ok(7 * 86400));
        assert_eq!(parse_invite_lifetime("365d"), Ok(MAX_INVITE_LIFETIME_SECS));
        assert_eq!(parse_invite_lifetime("8760h"), Ok(MAX_INVITE_LIFETIME_SECS));
    }

    #[test]
    fn rejects_zero_and_too_long() {
        for bad in [
            "0s",
            "0d",
            "000m",
            "366d",
            "8761h",
            "31536001s",
            "99999999999999999999d",
        ] {
            assert!(parse_invite_lifetime(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "7",
            "d",
            "7w",
            "-1d",
            "+1d",
            "1.5h",
            "1h30m",
            "7 d",
            "seven days",
            "7dé",
            "é",
        ] {
            assert!(parse_invite_lifetime(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn says_which_part_is_wrong() {
        let no_unit = parse_invite_lifetime("7").unwrap_err();
        assert!(no_unit.starts_with("the duration has no unit"), "{no_unit}");
        let years = parse_invite_lifetime("5y").unwrap_err();
        assert!(years.starts_with("`y` is not a unit of time"), "{years}");
        assert_eq!(parse_wait("2h"), Ok(2 * 3600));
        assert!(parse_wait("0m").unwrap_err().contains("leave --wait out"));
        assert!(parse_wait("400d").unwrap_err().contains("no point waiting"));
    }
}
