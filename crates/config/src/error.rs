use std::path::PathBuf;

/// Why settings could not be loaded. Every variant names where to look.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown APP_ENV `{0}`: expected one of develop, staging, production, test")]
    UnknownEnvironment(String),

    /// A base file every environment needs (`config/base/…`).
    #[error("config file {} not found (loading APP_ENV {env})", .file.display())]
    MissingFile { file: PathBuf, env: &'static str },

    /// Bad YAML, a wrong type, an unknown enum value or an unparsable duration. The inner message
    /// from the `config` crate already names the key and the file (or environment variable).
    #[error("invalid configuration in {files}: {source}")]
    Load {
        files: String,
        #[source]
        source: Box<config::ConfigError>,
    },

    /// A value that parsed but makes no sense.
    #[error("invalid value for key `{key}` in {file}: {reason}")]
    Invalid {
        file: String,
        key: &'static str,
        reason: String,
    },
}
