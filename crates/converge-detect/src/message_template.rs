//! The message template: literal text with `{placeholder}`s, its check, its rendering
//! from a value per placeholder, and the way numbers are written.
//!
//! The SQL returns numbers; the words are rendered in Rust (a finding's in
//! [`crate::finding_message`]), so both backends produce the same text and a template
//! can be checked before anything runs.

use crate::error::SpecProblem;

/// The placeholders a message template may use, each written `{name}`.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    ("tenant", "the tenant"),
    ("entity_type", "the entity type (page, campaign, ...)"),
    ("entity_id", "the entity's canonical id"),
    ("title", "the detector's title"),
    ("recent", "the recent value"),
    ("baseline", "the baseline value"),
    ("reference", "the value compared with (threshold, baseline × fraction, percentile × factor)"),
    ("volume", "the recent-window volume"),
    ("change_pct", "signed change of recent against baseline, e.g. -42.1%"),
    ("recent_days", "length of the recent window"),
    ("baseline_days", "length of the baseline window"),
];

/// A template is literal text with `{placeholder}`s; braces have no other use.
pub(crate) fn check_template(template: &str) -> Result<(), SpecProblem> {
    for segment in parse(template)? {
        if let Segment::Placeholder(name) = segment {
            if !PLACEHOLDERS.iter().any(|(known, _)| *known == name) {
                let known: Vec<String> = PLACEHOLDERS.iter().map(|(known, _)| format!("{{{known}}}")).collect();
                return Err(SpecProblem::Template {
                    expected: format!("placeholders among {}", known.join(", ")),
                    got: format!("{{{name}}}"),
                });
            }
        }
    }
    Ok(())
}

enum Segment<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

fn parse(template: &str) -> Result<Vec<Segment<'_>>, SpecProblem> {
    let mut segments = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let open = rest.find('{');
        let close = rest.find('}');
        match (open, close) {
            (None, None) => {
                segments.push(Segment::Text(rest));
                break;
            }
            (Some(open), Some(close)) if open < close => {
                let name = &rest[open + 1..close];
                if name.contains('{') || name.is_empty() {
                    return Err(SpecProblem::Template {
                        expected: "a placeholder name between { and }".to_string(),
                        got: rest[open..=close].to_string(),
                    });
                }
                segments.push(Segment::Text(&rest[..open]));
                segments.push(Segment::Placeholder(name));
                rest = &rest[close + 1..];
            }
            (Some(open), None) => {
                return Err(SpecProblem::Template {
                    expected: "a closing } after {".to_string(),
                    got: rest[open..].to_string(),
                });
            }
            (_, Some(close)) => {
                return Err(SpecProblem::Template {
                    expected: "} only to close a placeholder".to_string(),
                    got: rest[..=close].to_string(),
                });
            }
        }
    }
    Ok(segments)
}

/// Renders a template, each placeholder replaced by `value(name)`. Templates are checked
/// when their spec is validated; an unchecked, malformed template renders as its literal
/// text.
pub fn render(template: &str, mut value: impl FnMut(&str) -> String) -> String {
    let Ok(segments) = parse(template) else {
        return template.to_string();
    };
    let mut out = String::with_capacity(template.len() + 32);
    for segment in segments {
        match segment {
            Segment::Text(text) => out.push_str(text),
            Segment::Placeholder(name) => out.push_str(&value(name)),
        }
    }
    out
}

/// Numbers for people: whole numbers from 100 up, two decimals from 1, three
/// significant digits below (a 0.15% spam rate must not print as 0.00).
pub fn format_number(value: f64) -> String {
    let magnitude = value.abs();
    let text = if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 1.0 || magnitude == 0.0 {
        format!("{value:.2}")
    } else {
        let decimals = (2 - magnitude.log10().floor() as i32).clamp(0, 12) as usize;
        format!("{value:.decimals$}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_significant_digits() {
        assert_eq!(format_number(1234.56), "1235");
        assert_eq!(format_number(12.345), "12.35");
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(0.15), "0.15");
        assert_eq!(format_number(0.001234), "0.00123");
        assert_eq!(format_number(-0.5), "-0.5");
    }

    #[test]
    fn templates_reject_unknown_and_unbalanced_placeholders() {
        assert!(check_template("Rate on {entity_id} is {recent} ({change_pct})").is_ok());
        assert!(check_template("no placeholders").is_ok());
        let unknown = check_template("{entity} fell").unwrap_err().to_string();
        assert!(unknown.contains("got \"{entity}\""), "{unknown}");
        assert!(unknown.contains("{entity_id}"), "{unknown}");
        let unclosed = check_template("fell to {recent").unwrap_err().to_string();
        assert!(unclosed.contains("a closing }"), "{unclosed}");
        let stray = check_template("fell } to").unwrap_err().to_string();
        assert!(stray.contains("} only to close"), "{stray}");
        assert!(check_template("empty {} here").is_err());
    }
}
