//! The bodies of `POST /v1/devices/enroll` ([`ENROLL_PATH`](crate::ENROLL_PATH)): the one
//! endpoint without a user login, the one-time code is the credential.

use serde::{Deserialize, Serialize};

/// What a device sends to enroll.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollRequest {
    /// The one-time code from Settings → Devices (`POST /v1/me/devices/enrollments`).
    pub code: String,
    /// The device's name; empty: the one given with the code.
    #[serde(default)]
    pub name: String,
    /// What the device is: empty, or the kind its code was created for (anything else is
    /// refused; the code decides).
    #[serde(default)]
    pub kind: String,
    /// What the device runs on (e.g. `linux-x86_64`).
    #[serde(default)]
    pub platform: String,
}

/// The enrolled device's credentials.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    pub device_id: String,
    /// The device's bearer token for `/v1/devices/connect`; shown only now.
    pub device_token: String,
    #[serde(default)]
    pub name: String,
}
