//! The errors of reading a definition file: each located at the offending
//! key or value (shared by the YAML reader and the field parsers).

use std::fmt;

/// One problem in a definition file, located at the offending key or value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinitionError {
    /// The file name given to [`parse_definition`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The path of the field, e.g. `stages[1].trigger.schedule.cron`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.field, self.message
        )
    }
}

impl std::error::Error for DefinitionError {}

/// Every problem found in a definition file (never empty), in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinitionErrors(pub Vec<DefinitionError>);

impl DefinitionErrors {
    /// The first problem (in file order).
    pub fn first(&self) -> Option<&DefinitionError> {
        self.0.first()
    }

    /// All problems.
    pub fn iter(&self) -> std::slice::Iter<'_, DefinitionError> {
        self.0.iter()
    }
}

impl fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DefinitionErrors {}

impl From<DefinitionError> for DefinitionErrors {
    fn from(error: DefinitionError) -> Self {
        DefinitionErrors(vec![error])
    }
}
