// A Java client as CockroachDB's docs set one up: the PostgreSQL JDBC driver (pgjdbc), logging in with
// a client certificate whose key is the PKCS#8 DER file `cockroach cert create-client
// --also-generate-pkcs8-key` writes (client.<user>.key.pk8). pgjdbc reads sslkey as DER PKCS#8 (its
// LazyKeyManager), sslcert as the PEM certificate and its chain, and sslrootcert as the PEM CAs it
// trusts; sslmode=verify-full also checks the server's host name against its certificate.
//
// Usage: JdbcLogin HOST PORT USER SSLCERT SSLKEY SSLROOTCERT
// Prints `SELECT current_user` and exits 0; on any failure prints the exception chain to stderr, exit 1.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.Properties;

public final class JdbcLogin {
    private JdbcLogin() {
    }

    public static void main(String[] args) {
        if (args.length != 6) {
            System.err.println("usage: JdbcLogin HOST PORT USER SSLCERT SSLKEY SSLROOTCERT");
            System.exit(2);
        }
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/postgres";
        Properties props = new Properties();
        props.setProperty("user", args[2]);
        props.setProperty("ssl", "true");
        props.setProperty("sslmode", "verify-full");
        props.setProperty("sslcert", args[3]);
        props.setProperty("sslkey", args[4]);
        props.setProperty("sslrootcert", args[5]);
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "20");
        try (Connection conn = DriverManager.getConnection(url, props);
             Statement stmt = conn.createStatement();
             ResultSet rs = stmt.executeQuery("SELECT current_user")) {
            rs.next();
            System.out.println(rs.getString(1));
        } catch (Exception e) {
            for (Throwable t = e; t != null; t = t.getCause()) {
                System.err.println(t.getClass().getName() + ": " + t.getMessage());
            }
            System.exit(1);
        }
    }
}
