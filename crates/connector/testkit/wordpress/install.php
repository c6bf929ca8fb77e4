<?php
/**
 * Installs the test site: creates its database, runs WordPress's installer with the user
 * `admin` (a random password nobody needs), turns pretty permalinks on, and makes an
 * application password for `admin`.
 *
 * Usage: php install.php DOCROOT SOCKET DATABASE
 *
 * Prints, on a line of its own, `FIELDSYNC-SETUP ` and a JSON object with `user` and
 * `app_password`. Exits non-zero on any failure.
 */

list( , $docroot, $socket, $database ) = $argv;

// WordPress cannot load without its database, so it is made first.
mysqli_report( MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT );
$db = new mysqli( 'localhost', 'root', '', '', 0, $socket );
$db->query( 'CREATE DATABASE IF NOT EXISTS `' . $db->real_escape_string( $database ) . '` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci' );
$db->close();

define( 'WP_INSTALLING', true );
$_SERVER['HTTP_HOST']       = '127.0.0.1';
$_SERVER['SERVER_NAME']     = '127.0.0.1';
$_SERVER['REQUEST_URI']     = '/';
$_SERVER['SERVER_PROTOCOL'] = 'HTTP/1.1';
require $docroot . '/wp-load.php';

/** The installer mails the new admin; the test site sends no mail. */
function wp_new_blog_notification( $blog_title, $blog_url, $user_id, $password ) {
}

require_once ABSPATH . 'wp-admin/includes/upgrade.php';

// The installer asks the site over HTTP whether pretty permalinks work; they are set below
// instead, so that question fails at once.
add_filter(
	'pre_http_request',
	function () {
		return new WP_Error( 'http_request_failed', 'The test site makes no HTTP requests.' );
	}
);

$result = wp_install( 'fieldsync test site', 'admin', 'admin@example.com', false, '', wp_generate_password( 24, false ) );
if ( is_wp_error( $result ) ) {
	fwrite( STDERR, 'wp_install failed: ' . $result->get_error_message() . "\n" );
	exit( 1 );
}

global $wp_rewrite;
$wp_rewrite->set_permalink_structure( '/%postname%/' );
// Not hard: the rules go to the database only, no .htaccess is written.
flush_rewrite_rules( false );

$created = WP_Application_Passwords::create_new_application_password( $result['user_id'], array( 'name' => 'fieldsync tests' ) );
if ( is_wp_error( $created ) ) {
	fwrite( STDERR, 'creating the application password failed: ' . $created->get_error_message() . "\n" );
	exit( 1 );
}

echo "\nFIELDSYNC-SETUP " . wp_json_encode(
	array(
		'user'         => 'admin',
		'app_password' => $created[0],
	)
) . "\n";
