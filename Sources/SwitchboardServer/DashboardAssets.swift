/// The dashboard page and the JavaScript client, compiled into the binary from
/// `Resources/` (SwiftPM's `embedInCode`): nothing to install next to the executable.
enum DashboardAssets {
    static var page: [UInt8] { PackageResources.dashboard_html }
    static var client: [UInt8] { PackageResources.client_js }
}
