//! `notesd openapi`: prints the OpenAPI document.

pub fn run() {
    println!("{}", crate::api::spec_json());
}
