//! Printing results: pretty JSON with `--output json`, a table otherwise.

use comfy_table::{Table, presets};
use serde_json::Value;

use super::Output;

/// Prints `value` as JSON, or the table `to_table` builds from it.
pub fn print(output: Output, value: &Value, to_table: impl FnOnce(&Value) -> Table) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        ),
        Output::Table => println!("{}", to_table(value)),
    }
}

/// A table with `headers`, one row per element of `rows` (an array), cells picked by `cells`.
pub fn table(headers: &[&str], rows: &Value, cells: impl Fn(&Value) -> Vec<String>) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(headers.iter().map(|h| h.to_uppercase()));
    for row in rows.as_array().into_iter().flatten() {
        t.add_row(cells(row));
    }
    t
}

/// A two-column key/value table of an object's fields (nested values as compact JSON).
pub fn fields(value: &Value) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    if let Some(obj) = value.as_object() {
        for (k, v) in obj {
            t.add_row(vec![k.clone(), cell(v)]);
        }
    }
    t
}

/// A value as a table cell: strings bare, null empty, others compact JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// `row[key]` as a cell.
pub fn get(row: &Value, key: &str) -> String {
    row.get(key).map(cell).unwrap_or_default()
}
