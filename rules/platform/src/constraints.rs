//! User constraints: boolean expressions over the resource report
//! (`weight_bytes <= 1_500_000`, `layers <= 24 && latency_us < 500`),
//! evaluated with evalexpr.

use std::collections::BTreeMap;

use evalexpr::{ContextWithMutableVariables, DefaultNumericTypes, HashMapContext, Value};

use crate::error::PlatformError;

/// Numbers a constraint may name, by name.
pub type Resources = BTreeMap<String, f64>;

/// Whether `expression` holds for `resources`; an expression that is not a
/// boolean, or names an unknown quantity, is an error.
pub fn evaluate(expression: &str, resources: &Resources) -> Result<bool, PlatformError> {
    let fail = |message: String| PlatformError::Constraint {
        expression: expression.to_owned(),
        message,
    };
    let mut context = HashMapContext::<DefaultNumericTypes>::new();
    for (name, value) in resources {
        // Whole numbers as integers, so that `layers == 3` compares equal.
        let value = if value.fract() == 0.0 && value.abs() < 9.0e15 {
            Value::Int(*value as i64)
        } else {
            Value::Float(*value)
        };
        context
            .set_value(name.clone(), value)
            .map_err(|e| fail(e.to_string()))?;
    }
    match evalexpr::eval_with_context(&without_digit_separators(expression), &context) {
        Ok(Value::Boolean(b)) => Ok(b),
        Ok(other) => Err(fail(format!("is not a comparison (its value is {other})"))),
        Err(evalexpr::EvalexprError::VariableIdentifierNotFound(name)) => Err(fail(format!(
            "unknown quantity `{name}`; known: {}",
            resources.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Whether `expression` is a well-formed comparison, before any resource
/// is known: it is evaluated with every name it uses set to 1.
pub fn validate(expression: &str) -> Result<(), PlatformError> {
    let fail = |message: String| PlatformError::Constraint {
        expression: expression.to_owned(),
        message,
    };
    let tree = evalexpr::build_operator_tree::<DefaultNumericTypes>(&without_digit_separators(expression))
        .map_err(|e| fail(e.to_string()))?;
    let names: Resources = tree.iter_variable_identifiers().map(|n| (n.to_owned(), 1.0)).collect();
    evaluate(expression, &names).map(drop)
}

/// `1_500_000` as `1500000`: TOML-style digit separators, which evalexpr
/// does not read. Underscores inside names stay.
fn without_digit_separators(expression: &str) -> String {
    let chars: Vec<char> = expression.chars().collect();
    let mut out = String::with_capacity(expression.len());
    let mut in_name = false;
    for (i, &c) in chars.iter().enumerate() {
        let separator = c == '_'
            && !in_name
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if separator {
            continue;
        }
        out.push(c);
        in_name = if in_name {
            c.is_alphanumeric() || c == '_'
        } else {
            c.is_alphabetic() || c == '_'
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources() -> Resources {
        [("weight_bytes", 1_200_000.0), ("layers", 12.0), ("latency_us", 950.5)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn comparisons_and_logic() {
        let r = resources();
        assert!(evaluate("weight_bytes <= 1_500_000", &r).unwrap());
        assert!(!evaluate("weight_bytes <= 1_000_000", &r).unwrap());
        assert!(evaluate("layers <= 24 && latency_us < 1000", &r).unwrap());
        assert!(!evaluate("layers > 12 || latency_us < 900", &r).unwrap());
        assert!(evaluate("weight_bytes / 1024 < 1200", &r).unwrap());
    }

    #[test]
    fn mistakes_are_reported() {
        let r = resources();
        let e = evaluate("wieght_bytes < 5", &r).unwrap_err().to_string();
        assert!(
            e.contains("unknown quantity `wieght_bytes`") && e.contains("weight_bytes"),
            "{e}"
        );
        let e = evaluate("layers + 1", &r).unwrap_err().to_string();
        assert!(e.contains("not a comparison"), "{e}");
        assert!(evaluate("layers <=", &r).is_err());
        assert!(validate("layers <=").is_err());
        assert!(validate("weight_bytes <= 1_500_000").is_ok());
    }

    #[test]
    fn separators_only_between_digits() {
        assert_eq!(
            without_digit_separators("a_1 <= 1_000 && b_2_3 > 2_0"),
            "a_1 <= 1000 && b_2_3 > 20"
        );
    }
}
