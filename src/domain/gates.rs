//! Gate `success` expressions: CEL (the Common Expression Language, as
//! Kubernetes uses it) over `status` (an int), `headers` (a map of lower-case
//! names to values) and `body` (the parsed JSON answer, or its text when it
//! is not JSON).
//!
//! Compiling and evaluating a CEL program is pure (no I/O), so both live in
//! the domain: the definition validator compiles every expression at import
//! and save ([`compile_success`]); the gate engine evaluates them per sample
//! ([`evaluate_success`]).
use std::collections::BTreeMap;
use std::fmt;

/// An expression that does not compile, with the position inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpressionError {
    /// 1-based line inside the expression.
    pub line: usize,
    /// 1-based column inside the expression.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ExpressionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid success expression at line {}, column {} of the expression: {}",
            self.line, self.column, self.message
        )
    }
}

/// The variables a success expression may use.
pub const SUCCESS_VARIABLES: &[&str] = &["status", "headers", "body"];

/// Compiles a success expression, reporting the first error with its position.
pub fn compile_success(expr: &str) -> Result<(), ExpressionError> {
    compile(expr).map(|_| ())
}

fn compile(expr: &str) -> Result<cel::Program, ExpressionError> {
    // The parser is a generated one; never let a panic in it take a caller down.
    let source = expr.to_owned();
    let result = std::panic::catch_unwind(move || cel::Program::compile(&source));
    match result {
        Ok(Ok(program)) => Ok(program),
        Ok(Err(errors)) => {
            let first = errors.errors.first();
            let (line, column) = first
                .map(|e| {
                    (
                        usize::try_from(e.pos.0).unwrap_or(1).max(1),
                        // CEL reports 0-based columns.
                        usize::try_from(e.pos.1).unwrap_or(0) + 1,
                    )
                })
                .unwrap_or((1, 1));
            let message = first
                .map(|e| e.msg.clone())
                .unwrap_or_else(|| "the expression does not parse".to_owned());
            Err(ExpressionError {
                line,
                column,
                message,
            })
        }
        Err(_) => Err(ExpressionError {
            line: 1,
            column: 1,
            message: "the expression does not parse".to_owned(),
        }),
    }
}

/// A compiled success expression, to evaluate many samples without
/// parsing it again.
#[derive(Debug)]
pub struct SuccessExpr {
    program: cel::Program,
    reads: Reads,
}

/// Which of the answer's variables an expression reads (found once, when
/// it is compiled).
#[derive(Clone, Copy, Debug)]
struct Reads {
    headers: bool,
    body: bool,
}

impl Reads {
    fn of(program: &cel::Program) -> Reads {
        let references = program.references();
        Reads {
            headers: references.has_variable("headers"),
            body: references.has_variable("body"),
        }
    }
}

impl SuccessExpr {
    /// Compiles `expr`.
    pub fn compile(expr: &str) -> Result<SuccessExpr, ExpressionError> {
        let program = compile(expr)?;
        let reads = Reads::of(&program);
        Ok(SuccessExpr { program, reads })
    }

    /// Whether it reads `headers` (else they need not be collected).
    pub fn reads_headers(&self) -> bool {
        self.reads.headers
    }

    /// Whether it reads `body` (else the answer need not be parsed).
    pub fn reads_body(&self) -> bool {
        self.reads.body
    }

    /// Evaluates it over one HTTP answer (see [`evaluate_success`]); the
    /// headers and the body are read only when the expression uses them.
    pub fn evaluate(
        &self,
        status: u16,
        headers: &BTreeMap<String, String>,
        body: &serde_json::Value,
    ) -> Result<bool, String> {
        execute(&self.program, self.reads, status, headers, body)
    }
}

/// Evaluates a success expression over one HTTP answer. `Ok(true)` passes,
/// `Ok(false)` fails; an expression that does not compile, refers to a
/// missing field or does not give a boolean is an `Err` (inconclusive).
pub fn evaluate_success(
    expr: &str,
    status: u16,
    headers: &BTreeMap<String, String>,
    body: &serde_json::Value,
) -> Result<bool, String> {
    let program = compile(expr).map_err(|e| e.to_string())?;
    let reads = Reads::of(&program);
    execute(&program, reads, status, headers, body)
}

fn execute(
    program: &cel::Program,
    reads: Reads,
    status: u16,
    headers: &BTreeMap<String, String>,
    body: &serde_json::Value,
) -> Result<bool, String> {
    // The standard library is built once (`Context::default()` builds it
    // on every call), and only the variables the expression reads are
    // converted: a sample of `status == 200` converts no body.
    static STDLIB: std::sync::LazyLock<std::sync::Arc<cel::Env>> =
        std::sync::LazyLock::new(|| std::sync::Arc::new(cel::Env::stdlib()));
    let mut context = cel::Context::with_env(STDLIB.clone());
    context.add_variable_from_value("status", i64::from(status));
    if reads.headers {
        let headers = cel::to_value(headers).map_err(|e| e.to_string())?;
        context.add_variable_from_value("headers", headers);
    }
    if reads.body {
        let body = cel::to_value(body).map_err(|e| e.to_string())?;
        context.add_variable_from_value("body", body);
    }
    match program.execute(&context) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!(
            "the expression gave {other:?}, not a boolean (true or false)"
        )),
        Err(e) => Err(format!("the expression failed: {e}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compiles_good_expressions() {
        compile_success("status == 200 && body.status == 'healthy'").unwrap();
        compile_success("status >= 200 && status < 300").unwrap();
    }

    #[test]
    fn reports_the_position_of_an_error() {
        let e = compile_success("status == 200 &&& body.ok").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.column > 1, "{e:?}");
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn evaluates_over_status_headers_and_body() {
        let headers = BTreeMap::from([("content-type".to_owned(), "application/json".to_owned())]);
        let body = json!({"status": "healthy", "n": 3});
        let ok = "status == 200 && body.status == 'healthy' && body.n > 2";
        assert!(evaluate_success(ok, 200, &headers, &body).unwrap());
        assert!(!evaluate_success(ok, 503, &headers, &body).unwrap());
        assert!(
            evaluate_success(
                "headers['content-type'] == 'application/json'",
                200,
                &headers,
                &body
            )
            .unwrap()
        );
        assert!(evaluate_success("body.missing == 1", 200, &headers, &body).is_err());
        assert!(evaluate_success("status", 200, &headers, &body).is_err());
        let text = json!("OK");
        assert!(evaluate_success("body == 'OK'", 200, &headers, &text).unwrap());
    }
}
