// Stub of libraries/ESP8266WiFi/src/WiFiClientSecure.h for core 3.x, which is BearSSL only:
// WiFiClientSecureBearSSL.h + BearSSLHelpers.h + the BR_KEYTYPE_* constants of
// bearssl/bearssl_x509.h (declarations only).
#pragma once

#include <time.h>

#include "WiFiClient.h"

#define BR_KEYTYPE_RSA 1
#define BR_KEYTYPE_EC 2
#define BR_KEYTYPE_KEYX 0x10
#define BR_KEYTYPE_SIGN 0x20

namespace BearSSL {

class PrivateKey {
 public:
  PrivateKey();
  PrivateKey(const char* pemKey);
  PrivateKey(const uint8_t* derKey, size_t derLen);
  ~PrivateKey();
  bool parse(const char* pemKey);
  bool isRSA() const;
  bool isEC() const;
  PrivateKey(const PrivateKey& that) = delete;
};

class X509List {
 public:
  X509List();
  X509List(const char* pemCert);
  X509List(const uint8_t* derCert, size_t derLen);
  ~X509List();
  bool append(const char* pemCert);
  size_t getCount() const;
  X509List(const X509List& that) = delete;
};

class WiFiClientSecure : public WiFiClient {
 public:
  WiFiClientSecure();
  WiFiClientSecure(const WiFiClientSecure& rhs);
  ~WiFiClientSecure() override;

  int connect(IPAddress ip, uint16_t port) override;
  int connect(const String& host, uint16_t port) override;
  int connect(const char* name, uint16_t port) override;
  uint8_t connected() override;

  void setInsecure();
  bool setFingerprint(const uint8_t fingerprint[20]);
  bool setFingerprint(const char* fpStr);
  void setTrustAnchors(const X509List* ta);
  void setX509Time(time_t now);
  void setClientRSACert(const X509List* cert, const PrivateKey* sk);
  void setClientECCert(const X509List* cert, const PrivateKey* sk, unsigned allowed_usages,
                       unsigned cert_issuer_key_type);
  void setBufferSizes(int recv, int xmit);
  int getLastSSLError(char* dest = NULL, size_t len = 0);
};

}  // namespace BearSSL

using namespace BearSSL;
