//! A finding's words: the spec's message template filled from its result row
//! ([`FindingRow`], core's).

use converge_core::FindingRow;

use crate::message_template::{format_number, render};
use crate::spec::DetectorSpec;

/// Renders the spec's message for one row. The template was checked when the spec was
/// validated; an unchecked, malformed template renders as its literal text.
pub fn render_message(spec: &DetectorSpec, row: &FindingRow) -> String {
    render(&spec.message, |name| placeholder_value(spec, row, name))
}

fn placeholder_value(spec: &DetectorSpec, row: &FindingRow, name: &str) -> String {
    let windows = spec.windows.as_ref();
    match name {
        "tenant" => row.tenant.clone(),
        "entity_type" => row.entity_type.clone(),
        "entity_id" => row.entity_id.clone(),
        "title" => spec.title.clone(),
        "recent" => format_optional(row.recent_value),
        "baseline" => format_optional(row.baseline_value),
        "reference" => format_optional(row.reference_value),
        "volume" => format_optional(row.volume),
        "change_pct" => row.change_pct().map_or_else(|| "n/a".to_string(), |pct| format!("{pct:+.1}%")),
        "recent_days" => windows.map_or_else(|| "n/a".to_string(), |w| w.recent_days.to_string()),
        "baseline_days" => windows.and_then(|w| w.baseline_days).map_or_else(|| "n/a".to_string(), |d| d.to_string()),
        other => format!("{{{other}}}"),
    }
}

fn format_optional(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), format_number)
}
