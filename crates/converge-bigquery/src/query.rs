//! The jobs.query side of BigQuery: typed named query parameters (nothing from input
//! is ever spliced into SQL) and result rows read back as document states or JSON.

use google_cloud_bigquery::query::Row;
use google_cloud_bigquery_v2::model::{QueryParameter, QueryParameterType, QueryParameterValue, TableFieldSchema};

use converge_core::{DocState, StoreError};

use crate::error::{from_gax, BACKEND};

/// A named query parameter's value. Nothing from input is ever spliced into SQL:
/// values travel as parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryParam {
    String(String),
    Int64(i64),
    Float64(f64),
    Bool(bool),
    /// Microseconds since the epoch.
    Timestamp(i64),
    /// An `ARRAY<STRING>` (`doc_path IN UNNEST(@paths)`): a list of values travels as
    /// one parameter instead of one per element.
    Strings(Vec<String>),
}

impl QueryParam {
    pub(crate) fn to_parameter(&self, name: &str) -> QueryParameter {
        let scalar = |ty: &str, value: String| (QueryParameterType::new().set_type(ty), QueryParameterValue::new().set_value(value));
        let (ty, value) = match self {
            QueryParam::String(s) => scalar("STRING", s.clone()),
            QueryParam::Int64(i) => scalar("INT64", i.to_string()),
            QueryParam::Float64(f) if f.is_nan() => scalar("FLOAT64", "NaN".to_owned()),
            QueryParam::Float64(f) if f.is_infinite() => scalar("FLOAT64", if *f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()),
            QueryParam::Float64(f) => scalar("FLOAT64", f.to_string()),
            QueryParam::Bool(b) => scalar("BOOL", b.to_string()),
            QueryParam::Timestamp(us) => scalar("TIMESTAMP", format_timestamp(*us)),
            QueryParam::Strings(values) => (
                QueryParameterType::new().set_type("ARRAY").set_array_type(QueryParameterType::new().set_type("STRING")),
                QueryParameterValue::new().set_array_values(values.iter().map(|v| QueryParameterValue::new().set_value(v.clone()))),
            ),
        };
        QueryParameter::new().set_name(name).set_parameter_type(ty).set_parameter_value(value)
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff+00:00`, BigQuery's canonical TIMESTAMP literal.
fn format_timestamp(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{fraction:06}+00:00",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

pub(crate) fn row_error(context: &str, error: &google_cloud_bigquery::error::RowError) -> StoreError {
    match error {
        google_cloud_bigquery::error::RowError::Rpc { source, .. } => from_gax(context, source),
        other => StoreError::permanent(BACKEND, format!("{context}: unexpected result layout: {other}")),
    }
}

pub(crate) fn doc_state(row: &Row) -> Result<DocState, StoreError> {
    let get_error = |e: google_cloud_bigquery::error::RowError| row_error("read state", &e);
    Ok(DocState {
        doc_path: row.get(0).map_err(get_error)?,
        update_time: row.get(1).map_err(get_error)?,
        content_hash: row.get::<Option<String>>(2).map_err(get_error)?.unwrap_or_default(),
        version: row.get(3).map_err(get_error)?,
    })
}

pub(crate) fn row_json(row: &Row, fields: &[TableFieldSchema]) -> Result<serde_json::Value, StoreError> {
    let error = |e: google_cloud_bigquery::error::RowError| row_error("query", &e);
    let mut object = serde_json::Map::with_capacity(fields.len());
    for (i, field) in fields.iter().enumerate() {
        let repeated = field.mode == "REPEATED";
        let value = match field.r#type.as_str() {
            "INTEGER" | "INT64" if !repeated => row.get::<Option<i64>>(i).map_err(error)?.map_or(serde_json::Value::Null, Into::into),
            "FLOAT" | "FLOAT64" if !repeated => row
                .get::<Option<f64>>(i)
                .map_err(error)?
                .map_or(serde_json::Value::Null, |f| serde_json::Number::from_f64(f).map_or_else(|| f.to_string().into(), Into::into)),
            "BOOLEAN" | "BOOL" if !repeated => row.get::<Option<bool>>(i).map_err(error)?.map_or(serde_json::Value::Null, Into::into),
            "TIMESTAMP" if !repeated => match row.get::<Option<google_cloud_wkt::Timestamp>>(i).map_err(error)? {
                None => serde_json::Value::Null,
                Some(ts) => serde_json::to_value(ts).map_err(|e| StoreError::permanent(BACKEND, format!("query: timestamp: {e}")))?,
            },
            _ => row.get::<serde_json::Value>(i).map_err(error)?,
        };
        object.insert(field.name.clone(), value);
    }
    Ok(serde_json::Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_bigquery_literal_form() {
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00.000000+00:00");
        assert_eq!(format_timestamp(6), "1970-01-01 00:00:00.000006+00:00");
        assert_eq!(format_timestamp(1_700_000_000_123_456), "2023-11-14 22:13:20.123456+00:00");
        assert_eq!(format_timestamp(-1), "1969-12-31 23:59:59.999999+00:00");
        assert_eq!(format_timestamp(951_782_400_000_000), "2000-02-29 00:00:00.000000+00:00");
    }

    #[test]
    fn parameters_are_typed() {
        let p = QueryParam::String("acme".into()).to_parameter("tenant");
        assert_eq!(p.name, "tenant");
        assert_eq!(p.parameter_type.unwrap().r#type, "STRING");
        assert_eq!(p.parameter_value.unwrap().value.as_deref(), Some("acme"));
        let p = QueryParam::Strings(vec!["a".into(), "b".into()]).to_parameter("paths");
        let ty = p.parameter_type.unwrap();
        assert_eq!((ty.r#type.as_str(), ty.array_type.unwrap().r#type.as_str()), ("ARRAY", "STRING"));
        let values: Vec<Option<String>> = p.parameter_value.unwrap().array_values.into_iter().map(|v| v.value).collect();
        assert_eq!(values, vec![Some("a".to_owned()), Some("b".to_owned())]);
    }
}
