//! What the HTTP source and sink share: authentication (`auth.rs`: bearer, basic, API key,
//! OAuth2 client credentials) and the client with its body limits (`client.rs`).

pub mod auth;
pub mod client;
