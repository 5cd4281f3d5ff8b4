//! Canonical entity ids, per entity type, as `converge_detect::vocabulary` defines
//! them. A raw id that canonicalises to the empty string is reported as such (an empty
//! id fails the slice's quality check; it is never replaced by a made-up id).

use converge_detect::EntityType;

/// The canonical id of a raw id made of `parts` (one per id field, in order).
/// Returns `Err` with the reason for a raw id the type does not accept (an unknown
/// device category): that record breaks the schema contract.
pub fn canonical_id(entity_type: EntityType, parts: &[&str]) -> Result<String, String> {
    Ok(match entity_type {
        EntityType::Page => page_path(parts[0]),
        EntityType::Campaign | EntityType::Email => slug(parts[0]),
        EntityType::FunnelStep => {
            let (funnel, step) = (slug(parts[0]), slug(parts[1]));
            if funnel.is_empty() || step.is_empty() {
                String::new()
            } else {
                format!("{funnel}:{step}")
            }
        }
        EntityType::Device => device(parts[0])?,
        EntityType::TrafficSource => {
            let (source, medium) = (parts[0].trim().to_lowercase(), parts[1].trim().to_lowercase());
            if source.is_empty() || medium.is_empty() {
                String::new()
            } else {
                format!("{source}/{medium}")
            }
        }
        EntityType::Keyword => keyword(parts[0]),
    })
}

/// Page: the URL's path without scheme, host, query string or fragment, and without
/// a trailing slash (`https://shop.example/pricing/?utm_source=x#plans` → `/pricing`;
/// the home page is `/`). A bare path is taken as a path. Blank → empty.
pub fn page_path(raw: &str) -> String {
    let raw = raw.trim();
    if raw.is_empty() {
        return String::new();
    }
    let without_scheme = match raw.find("://") {
        Some(at) => {
            let rest = &raw[at + 3..];
            // The path starts at the first `/`, `?` or `#` after the host.
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            &rest[end..]
        }
        None => raw,
    };
    let path = &without_scheme[..without_scheme.find(['?', '#']).unwrap_or(without_scheme.len())];
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else if trimmed.starts_with('/') {
        trimmed.into()
    } else {
        format!("/{trimmed}")
    }
}

/// Campaign and email ids: lower case, every run of characters other than ASCII
/// letters and digits one `_`, none at either end (`Spring Sale 2025!` →
/// `spring_sale_2025`).
pub fn slug(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut gap = false;
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

/// Keyword: lower case, trimmed, inner whitespace collapsed to one space.
pub fn keyword(raw: &str) -> String {
    raw.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

/// Device: GA4's device category, lower case: `desktop`, `mobile` or `tablet`.
pub fn device(raw: &str) -> Result<String, String> {
    let category = raw.trim().to_lowercase();
    match category.as_str() {
        "desktop" | "mobile" | "tablet" => Ok(category),
        "" => Ok(String::new()),
        _ => Err(format!("device_category {raw:?} is not a device category: expected desktop, mobile or tablet (any case)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_url_paths_without_query_string() {
        for (raw, expected) in [
            ("https://shop.example/pricing?utm_source=news&x=1", "/pricing"),
            ("https://shop.example/pricing/", "/pricing"),
            ("http://shop.example", "/"),
            ("https://shop.example/?gclid=abc", "/"),
            ("https://shop.example#top", "/"),
            ("https://shop.example/blog/launch#comments", "/blog/launch"),
            ("/docs/api?v=2", "/docs/api"),
            ("docs", "/docs"),
            ("  ", ""),
            ("", ""),
        ] {
            assert_eq!(page_path(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn slugs_keywords_and_devices() {
        assert_eq!(slug("Spring Sale 2025!"), "spring_sale_2025");
        assert_eq!(slug("  Newsletter — Weekly  "), "newsletter_weekly");
        assert_eq!(slug("retargeting"), "retargeting");
        assert_eq!(slug("!!!"), "");
        assert_eq!(keyword("  Running   SHOES "), "running shoes");
        assert_eq!(keyword(" \t "), "");
        assert_eq!(device(" Desktop").unwrap(), "desktop");
        assert!(device("smart tv").unwrap_err().contains("smart tv"));
    }

    #[test]
    fn multi_field_ids() {
        assert_eq!(canonical_id(EntityType::TrafficSource, &[" Google", "CPC "]).unwrap(), "google/cpc");
        assert_eq!(canonical_id(EntityType::TrafficSource, &["(direct)", "(none)"]).unwrap(), "(direct)/(none)");
        assert_eq!(canonical_id(EntityType::TrafficSource, &["google", " "]).unwrap(), "");
        assert_eq!(canonical_id(EntityType::FunnelStep, &["Checkout", "Payment Details"]).unwrap(), "checkout:payment_details");
        assert_eq!(canonical_id(EntityType::FunnelStep, &["Checkout", "?"]).unwrap(), "");
    }
}
