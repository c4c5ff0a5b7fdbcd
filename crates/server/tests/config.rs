//! The `api:` section of config.example.yaml documents every key with its default.

use std::path::Path;

use zero2048_server::ApiConfig;

#[test]
fn the_example_api_section_is_the_defaults_and_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.example.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let file: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let api: ApiConfig = serde_json::from_value(file["api"].clone()).unwrap();
    assert_eq!(api, ApiConfig::default());
    let keys = serde_json::to_value(ApiConfig::default()).unwrap();
    for key in keys.as_object().unwrap().keys() {
        assert!(text.contains(&format!("  {key}:")), "config.example.yaml does not document api.{key}");
    }
    let unknown = serde_yaml_ng::from_str::<ApiConfig>("max_upload_byte: 3\n");
    assert!(unknown.unwrap_err().to_string().contains("max_upload_byte"));
}
